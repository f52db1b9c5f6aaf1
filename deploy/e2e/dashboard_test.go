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
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/samsyn/samsyn/coordinator/api"
	"github.com/samsyn/samsyn/coordinator/dashboard"
	"github.com/samsyn/samsyn/coordinator/study"
)

// chromium finds Debian's chromium; CI installs it and sets SAMSYN_REQUIRE_CHROMIUM.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("SAMSYN_REQUIRE_CHROMIUM") != "" {
		t.Fatal("chromium is required (apt-get install chromium)")
	}
	t.Skip("chromium is not installed: the dashboard's browser test did not run")
	return ""
}

func TestDashboardE2EInChromium(t *testing.T) {
	bin := chromium(t)
	// The demo's data; Roslagen refuses the study, so the page must show it missing, never 0.
	f := startInProc(t, 0)
	ctx := context.Background()
	period := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	queries := append(allQueries(f.coord.Catalog()), study.QueryReq{ID: "what_works", Params: period}, study.QueryReq{ID: "time_to_work", Params: period})
	s, err := f.coord.Submit(ctx, &study.Request{Title: "Styrgruppens standardtabeller", Purpose: "dashboard", Queries: queries, OnNodeFailure: study.OnFailurePartial}, "eva")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, s, "roslagen")
	if got := f.wait(t, s.ID); got.State != study.Released {
		t.Fatalf("standard study %s", got.State)
	}
	tok := "steering-token-for-the-browser-test"
	sum := sha256.Sum256([]byte(tok))
	a := api.New(f.coord, f.store, []api.Token{{User: api.User{Name: "styrgruppen", Role: api.RoleSteering}, SHA256: hex.EncodeToString(sum[:])}}, slog.New(slog.DiscardHandler))
	mux := a.Handler()
	dashboard.Register(mux, map[string]int{"ostra-sodertorn": 210, "hbs": 285, "stockholm": 570, "sodertalje": 190, "varna": 170, "roslagen": 170, "suvs": 170, "samsund": 135})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	artefacts := os.Getenv("SAMSYN_ARTEFACTS")
	if artefacts == "" {
		artefacts = t.TempDir()
	}
	downloads := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("headless", true), chromedp.Flag("no-first-run", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	var mu sync.Mutex
	var problems []string
	// run bounds each step; on failure it shows the page and what the browser complained of.
	run := func(actions ...chromedp.Action) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Run(c, actions...); err != nil {
			var html string
			d, cancel2 := context.WithTimeout(bctx, 5*time.Second)
			defer cancel2()
			_ = chromedp.Run(d, chromedp.OuterHTML("body", &html, chromedp.ByQuery))
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("%v\nbrowser problems: %v\npage: %.2000s", err, problems, html)
		}
	}
	chromedp.ListenTarget(bctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError {
				problems = append(problems, fmt.Sprintf("console.error: %v", e.Args))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Error())
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.LevelError {
				problems = append(problems, "log: "+e.Entry.Text)
			}
		}
	})
	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var png []byte
			if err := chromedp.FullScreenshot(&png, 100).Do(ctx); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(artefacts, name+".png"), png, 0o644)
		})
	}
	ready := func(page string) chromedp.Action {
		return chromedp.WaitVisible(`main[data-page="`+page+`"][aria-busy="false"]`, chromedp.ByQuery)
	}
	tab := func(page string) chromedp.Tasks {
		return chromedp.Tasks{chromedp.Click(`nav button[data-page="`+page+`"]`, chromedp.ByQuery), ready(page), chromedp.Sleep(300 * time.Millisecond), shot(page)}
	}
	var overviewTab, firstAssoc string
	// The first Run starts the browser and ties it to bctx; later steps get their own deadlines.
	if err := chromedp.Run(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	run(cdplog.Enable())
	run(browser.SetDownloadBehavior(browser.SetDownloadBehaviorBehaviorAllowAndName).WithDownloadPath(downloads).WithEventsEnabled(true))
	run(chromedp.Navigate(srv.URL + "/"))
	run(chromedp.WaitVisible("#login", chromedp.ByQuery))
	run(
		chromedp.SendKeys("#token", tok, chromedp.ByQuery),
		chromedp.Click(`#login button[type="submit"]`, chromedp.ByQuery),
		ready("overview"), chromedp.Sleep(300*time.Millisecond), shot("oversikt"),
		chromedp.Text(`nav button[data-page="overview"]`, &overviewTab, chromedp.ByQuery),
		chromedp.Text(`main table tbody tr td`, &firstAssoc, chromedp.ByQuery),
	)
	if overviewTab != "Översikt" || !strings.HasPrefix(firstAssoc, "Samordningsförbundet") {
		t.Fatalf("Swedish by default: tab %q, first association %q", overviewTab, firstAssoc)
	}
	// Roslagen refused: its row says "saknas" in every column, never 0, and the page says
	// which association the result lacks.
	var roslagenRow []string
	var coverage string
	run(chromedp.Evaluate(`[...[...document.querySelectorAll('main tbody tr')].find(r => r.children[0].textContent.includes('Roslagen')).children].slice(1).map(c => c.textContent)`, &roslagenRow),
		chromedp.Text(`main .coverage`, &coverage, chromedp.ByQuery))
	for _, v := range roslagenRow[1:] {
		if v != "saknas" {
			t.Fatalf("Översikt: the refusing association's row reads %v", roslagenRow)
		}
	}
	if !strings.Contains(coverage, "7 av 8") || !strings.Contains(coverage, "Roslagen") {
		t.Fatalf("Översikt: coverage note %q", coverage)
	}
	// Drill-down: the chosen association's municipalities, each with its released shares.
	var drill []string
	run(chromedp.Evaluate(`(() => { const s = document.querySelector('#drill'); s.value = 'hbs'; s.dispatchEvent(new Event('change')); })()`, nil),
		chromedp.Sleep(300*time.Millisecond), ready("overview"),
		chromedp.Evaluate(`[...document.querySelector('#drill').closest('section').querySelectorAll('tbody tr td:first-child')].map(td => td.textContent)`, &drill))
	slices.Sort(drill)
	if strings.Join(drill, ",") != "Botkyrka,Huddinge,Salem" {
		t.Fatalf("Översikt: the drill-down into HBS lists %v", drill)
	}

	// The language toggle switches the page's words and the code lists' labels.
	run(chromedp.Click("#lang", chromedp.ByQuery), ready("overview"),
		chromedp.Text(`nav button[data-page="overview"]`, &overviewTab, chromedp.ByQuery),
		chromedp.Text(`main table tbody tr td`, &firstAssoc, chromedp.ByQuery),
		chromedp.Click("#lang", chromedp.ByQuery), ready("overview"))
	if overviewTab != "Overview" || !strings.Contains(firstAssoc, "Coordination Association") {
		t.Fatalf("English: tab %q, first association %q", overviewTab, firstAssoc)
	}

	// The map: 21 municipalities in the federation, 15 coloured (or suppressed), Roslagen's
	// six marked missing, and 5 outside.
	var inside, outside, coloured, missing int
	run(tab("map"),
		chromedp.Evaluate(`document.querySelectorAll('.tile[data-inside="true"]').length`, &inside),
		chromedp.Evaluate(`document.querySelectorAll('.tile[data-inside="false"]').length`, &outside),
		chromedp.Evaluate(`[...document.querySelectorAll('.tile[data-inside="true"]')].filter(e => e.style.background || e.dataset.suppressed === "true").length`, &coloured),
		chromedp.Evaluate(`[...document.querySelectorAll('.tile[data-missing="true"]')].filter(e => e.textContent.includes("saknas")).length`, &missing))
	if inside != 21 || outside != 5 || coloured != 15 || missing != 6 {
		t.Fatalf("map: %d inside (%d coloured or marked suppressed, %d missing), %d outside", inside, coloured, missing, outside)
	}

	// Mönster: every pattern (referral party, method, gender and age, country of birth,
	// education, years on support) shows shares, pooled over the seven associations.
	var shares []int
	run(tab("patterns"),
		chromedp.Evaluate(`[...document.querySelectorAll('main section.card')].map(c => [...c.querySelectorAll('tbody tr td')].filter(td => td.textContent.endsWith(' %')).length)`, &shares))
	// six patterns and the outcome by method within each association
	if len(shares) != 7 {
		t.Fatalf("Mönster has %d pattern cards, want 7", len(shares))
	}
	for i, n := range shares {
		// Within one association a method has few exits: one released share is the floor.
		if min := map[bool]int{true: 1, false: 2}[i == 6]; n < min {
			t.Fatalf("Mönster card %d shows %d shares (%v)", i, n, shares)
		}
	}

	// A chart's CSV download equals the released result.
	// Vad fungerar för vem: the odds ratios of the methods as released, in Swedish number
	// format, with the coverage line for the refusing association; the survival table with
	// the federation's total at start.
	var methodRows [][]string
	var wwCoverage string
	var canvases int
	run(tab("whatworks"),
		chromedp.Evaluate(`[...document.querySelectorAll('main section.card:first-of-type tbody tr')].map(r => [...r.children].map(c => c.textContent))`, &methodRows),
		chromedp.Text(`main .coverage`, &wwCoverage, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll('main canvas').length`, &canvases))
	if canvases != 2 || !strings.Contains(wwCoverage, "7 av 8") {
		t.Fatalf("Vad fungerar för vem: %d charts, coverage %q", canvases, wwCoverage)
	}
	var se []string
	for _, r := range methodRows {
		if strings.HasPrefix(r[0], "Metod: Supported Employment") && !strings.Contains(r[0], "grupp") {
			se = r
		}
	}
	if se == nil || !strings.Contains(se[1], ",") || !strings.Contains(se[1], "–") {
		t.Fatalf("Vad fungerar för vem: the Supported Employment row %v (rows %v)", se, methodRows)
	}
	var totalStart string
	run(chromedp.Evaluate(`[...document.querySelectorAll('main section.card:nth-of-type(2) tbody tr')].find(r => r.children[0].textContent === 'Totalt').children[1].textContent`, &totalStart))
	if totalStart == "" || totalStart == "färre än 10" {
		t.Fatalf("Vad fungerar för vem: the total at start reads %q", totalStart)
	}

	var query string
	run(chromedp.Click(`nav button[data-page="patterns"]`, chromedp.ByQuery), ready("patterns"),
		chromedp.AttributeValue(`button[data-download="csv"]`, "data-query", &query, nil, chromedp.ByQuery),
		chromedp.Click(`button[data-download="csv"]`, chromedp.ByQuery))
	// The browser saves the download under its GUID; wait (at most 30 s) for a finished file.
	var got []byte
	deadline := time.Now().Add(30 * time.Second)
	for len(got) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the CSV download did not finish")
		}
		entries, _ := os.ReadDir(downloads)
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".crdownload") {
				got, _ = os.ReadFile(filepath.Join(downloads, e.Name()))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, want, _ := call(t, "GET", srv.URL+"/api/v1/studies/"+s.ID+"/results/"+query+"?format=csv", tok, nil, "")
	if code != 200 || string(got) != string(want) || len(got) < 50 {
		t.Fatalf("the downloaded CSV of %s differs from the released result (%d bytes vs %d)", query, len(got), len(want))
	}

	var snapshots int
	run(tab("trends"), tab("studies"), tab("nodes"),
		chromedp.Evaluate(`[...document.querySelectorAll('main tbody tr')].filter(r => r.children[1].textContent === "i drift" && r.children[2].textContent === "koordinatorn ansluter" && r.children[3].textContent !== "–" && r.children[6].textContent !== "–" && r.children[7].textContent.startsWith("schema 1")).length`, &snapshots))
	if snapshots != 8 {
		t.Fatalf("Noder: %d healthy listening nodes with a last answer and a snapshot, want 8", snapshots)
	}

	// Accessibility: axe-core (vendored from npm, never served) on every tab in both
	// languages finds no serious or critical violation.
	axe, err := os.ReadFile("testdata/axe.min.js")
	if err != nil {
		t.Fatal(err)
	}
	run(chromedp.Evaluate(string(axe), nil))
	var violations []string
	for _, lang := range []string{"sv", "en"} {
		var cur string
		run(chromedp.Evaluate(`document.documentElement.lang`, &cur))
		if cur != lang {
			run(chromedp.Click("#lang", chromedp.ByQuery), chromedp.Sleep(300*time.Millisecond))
		}
		for _, page := range []string{"overview", "map", "patterns", "trends", "whatworks", "studies", "nodes"} {
			var found []string
			run(chromedp.Click(`nav button[data-page="`+page+`"]`, chromedp.ByQuery), ready(page), chromedp.Sleep(200*time.Millisecond),
				chromedp.Evaluate(`axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations
					.filter(v => v.impact === "serious" || v.impact === "critical")
					.map(v => v.impact + " " + v.id + ": " + v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(", ")))`, &found,
					func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
			for _, v := range found {
				violations = append(violations, lang+"/"+page+": "+v)
			}
		}
	}
	if len(violations) > 0 {
		t.Fatalf("axe-core: %d serious or critical violations:\n%s", len(violations), strings.Join(violations, "\n"))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("console errors:\n%s", strings.Join(problems, "\n"))
	}
	if os.Getenv("SAMSYN_SCREENSHOT_DOCS") != "" {
		raw, _ := os.ReadFile(filepath.Join(artefacts, "oversikt.png"))
		os.WriteFile("../../docs/dashboard.png", raw, 0o644)
	}
	t.Logf("screenshots in %s", artefacts)
}
