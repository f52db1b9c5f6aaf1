package preview

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samsyn/samsyn/node/executor"
	"github.com/samsyn/samsyn/node/nodetest"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
)

func TestPreviewExplainsEveryCell(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "s.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	nodetest.Seed(t, st.DB(), "hbs", 400)
	cat, err := queries.LoadDir("../../queries/catalog")
	if err != nil {
		t.Fatal(err)
	}
	x, err := executor.New(ctx, st, executor.Options{Association: "hbs", Secret: []byte("preview-secret-0123456789abcdef0"), Policy: disclosure.Defaults()})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	e, _ := cat.Get("outcome_by_gender_age")
	b, _ := e.Bind(map[string]string{"from": "2020-04-01", "to": "2022-09-30"})
	truth, err := x.Aggregate(ctx, e, b)
	if err != nil {
		t.Fatal(err)
	}
	defer truth.Release()
	res, err := x.Run(ctx, e, b)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Table.Release()
	rows, err := Compare(e, truth, res.Table, disclosure.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	small, released := 0, 0
	for _, r := range rows {
		switch {
		case r.Reason == "":
			t.Fatalf("cell %v has no explanation", r.Dims)
		case r.Suppressed && r.True > 0 && r.True < 5:
			small++
			if !strings.Contains(r.Reason, "fewer than 5") {
				t.Fatalf("cell %v: %s", r.Dims, r.Reason)
			}
		case r.Released != nil && r.True > 0:
			released++
			if d := *r.Released - r.True; d < -2 || d > 2 {
				t.Fatalf("cell %v: released %d for %d", r.Dims, *r.Released, r.True)
			}
		}
	}
	if small == 0 || released == 0 {
		t.Fatalf("expected both small suppressed and released cells: %d, %d", small, released)
	}
	var buf bytes.Buffer
	if err := Print(&buf, e, rows); err != nil || !strings.Contains(buf.String(), "true (local only)") {
		t.Fatalf("print: %v", err)
	}
}

func TestPreviewOfTheAnalyses(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "s.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	nodetest.Seed(t, st.DB(), "hbs", 400)
	cat, err := queries.LoadDir("../../queries/catalog")
	if err != nil {
		t.Fatal(err)
	}
	plugins := nodetest.Plugins(t)
	if _, err := cat.Pin(plugins, false); err != nil {
		t.Fatal(err)
	}
	x, err := executor.New(ctx, st, executor.Options{Association: "hbs", Secret: []byte("preview-secret-0123456789abcdef0"),
		Policy: disclosure.Defaults(), Plugins: executor.Plugins{Dir: plugins}})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	period := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	for id, want := range map[string][]string{
		"what_works":   {"participants in the model", "method: PRE_REHAB", "never answers alone"},
		"time_to_work": {"at risk", "not yet"},
		"pathways":     {"SE"},
	} {
		e, _ := cat.Get(id)
		b, _ := e.Bind(period)
		var out bytes.Buffer
		if err := Render(ctx, &out, x, e, b, "hbs", []string{"hbs", "varna"}); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		for _, w := range want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s: the preview does not say %q:\n%s", id, w, out.String())
			}
		}
	}
}
