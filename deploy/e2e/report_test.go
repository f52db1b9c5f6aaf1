package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/api"
	"github.com/samsyn/samsyn/coordinator/dashboard"
	"github.com/samsyn/samsyn/coordinator/report"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries/disclosure"
)

func poppler(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"pdftotext", "pdftoppm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("SAMSYN_REQUIRE_POPPLER") != "" {
				t.Fatalf("%s is required (apt-get install poppler-utils)", tool)
			}
			t.Skipf("%s is not installed (apt-get install poppler-utils): the report's PDF checks did not run", tool)
		}
	}
}

// TestTheMeetingReportShowsTheReleasedFigures makes the report as PDF and HTML from a
// federation in which Roslagen refuses, and checks it against the released results: the
// share to work or studies of every association that took part, computed here from the
// released table, appears in the PDF's text; Roslagen is "saknas"; the coverage is said; the
// pages render to images; the HTML is one file with the charts as images and no script.
func TestTheMeetingReportShowsTheReleasedFigures(t *testing.T) {
	bin := chromium(t)
	poppler(t)
	f := startInProc(t, 0)
	ctx := context.Background()
	period := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	queries := append(allQueries(f.coord.Catalog()), study.QueryReq{ID: "what_works", Params: period}, study.QueryReq{ID: "time_to_work", Params: period})
	s, err := f.coord.Submit(ctx, &study.Request{Title: "Styrgruppens standardtabeller", Purpose: "rapport", Queries: queries, OnNodeFailure: study.OnFailurePartial}, "eva")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, s, "roslagen")
	if got := f.wait(t, s.ID); got.State != study.Released {
		t.Fatalf("study %s", got.State)
	}
	tok := "steering-token-for-the-report-test"
	sum := sha256.Sum256([]byte(tok))
	a := api.New(f.coord, f.store, []api.Token{{User: api.User{Name: "styrgruppen", Role: api.RoleSteering}, SHA256: hex.EncodeToString(sum[:])}}, slog.New(slog.DiscardHandler))
	mux := a.Handler()
	dashboard.Register(mux, map[string]int{"hbs": 285, "stockholm": 570})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	dir := t.TempDir()
	if artefacts := os.Getenv("SAMSYN_ARTEFACTS"); artefacts != "" {
		dir = artefacts
	}
	pdf := filepath.Join(dir, "lagesrapport.pdf")
	o := report.Options{Coordinator: srv.URL, Token: tok, Period: "project", Lang: "sv", Out: pdf, Chromium: bin, Timeout: 2 * time.Minute}
	if err := report.Render(ctx, o); err != nil {
		t.Fatal(err)
	}
	text, err := exec.Command("pdftotext", "-layout", pdf, "-").Output()
	if err != nil {
		t.Fatalf("pdftotext: %v", err)
	}
	txt := string(text)

	// The oracle: the released targets table, read here without the dashboard's code.
	results, _ := f.store.Results(ctx, s.ID)
	var shares []string
	for _, r := range results {
		if r.QueryID != "targets_by_association" {
			continue
		}
		rec, err := coordinator.Decode(r.Release)
		if err != nil {
			t.Fatal(err)
		}
		e, _ := f.coord.Catalog().Get(r.QueryID)
		tbl := readTable(t, e, rec)
		n := map[[2]string]*int64{}
		for i := 0; i < tbl.Len(); i++ {
			c := tbl.Cell(i)
			n[[2]string{c.Dims[0], c.Dims[1]}] = c.N
		}
		for _, assoc := range f.coord.Federation() {
			ws, total := n[[2]string{assoc, "work_or_studies"}], n[[2]string{assoc, disclosure.Total}]
			if assoc == "roslagen" || ws == nil || total == nil || *total == 0 {
				continue
			}
			shares = append(shares, strings.Replace(fmt.Sprintf("%.1f %%", 100*float64(*ws)/float64(*total)), ".", ",", 1))
		}
	}
	if len(shares) < 5 {
		t.Fatalf("only %d released shares to look for", len(shares))
	}
	for _, sh := range shares {
		if !strings.Contains(txt, sh) {
			t.Errorf("the report does not show the released share %s", sh)
		}
	}
	for _, want := range []string{"Lägesrapport till styrgruppen", "Hela projektet (1 april 2020 – 30 september 2022)", "omfattar 7 av 8", "saknas",
		"Samordningsförbundet Roslagen", "Vad fungerar för vem", "Om siffrorna", "färre än 5"} {
		if !strings.Contains(txt, want) {
			t.Errorf("the report does not say %q", want)
		}
	}
	pages := strings.Count(txt, "\f")
	if pages < 6 {
		t.Errorf("the report has %d pages", pages)
	}
	prefix := filepath.Join(dir, "page")
	if out, err := exec.Command("pdftoppm", "-r", "40", "-png", "-f", "2", "-l", "2", pdf, prefix).CombinedOutput(); err != nil {
		t.Fatalf("pdftoppm: %v %s", err, out)
	}
	pngs, _ := filepath.Glob(prefix + "*.png")
	if len(pngs) != 1 {
		t.Fatalf("pdftoppm wrote %v", pngs)
	}
	if fi, _ := os.Stat(pngs[0]); fi.Size() < 10_000 {
		t.Errorf("page 2 renders to %d bytes: no chart drawn?", fi.Size())
	}

	html := filepath.Join(dir, "status-report.html")
	o.Out, o.Lang = html, "en"
	if err := report.Render(ctx, o); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(html)
	page := string(raw)
	if strings.Count(page, `<img src="data:image/png`) < 5 || strings.Contains(page, "<script") || !strings.Contains(page, "Status report to the steering group") {
		t.Errorf("the HTML report: %d chart images, script %v", strings.Count(page, `<img src="data:image/png`), strings.Contains(page, "<script"))
	}
	if strings.Contains(page, tok) {
		t.Error("the HTML report carries the token")
	}

	// A period without a released study is a clear error, not an empty report.
	o.Period, o.Out = "2019", filepath.Join(dir, "none.pdf")
	if err := report.Render(ctx, o); err == nil || !strings.Contains(err.Error(), "No released study") {
		t.Errorf("a period without results: %v", err)
	}
}
