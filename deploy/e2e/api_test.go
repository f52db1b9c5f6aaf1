package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"
	"github.com/xuri/excelize/v2"

	"github.com/samsyn/samsyn/coordinator/api"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries/wire"
)

var roles = []string{"steering", "evaluator", "association:hbs", "association:varna", "admin"}

func apiServer(t *testing.T, f *inproc) (*httptest.Server, map[string]string) {
	t.Helper()
	tokens := map[string]string{}
	var list []api.Token
	for _, r := range roles {
		tok := "token-for-" + strings.ReplaceAll(r, ":", "-")
		sum := sha256.Sum256([]byte(tok))
		tokens[r] = tok
		list = append(list, api.Token{User: api.User{Name: "user-" + r, Role: r}, SHA256: hex.EncodeToString(sum[:])})
	}
	srv := httptest.NewServer(api.New(f.coord, f.store, list, slog.New(slog.DiscardHandler)).Handler())
	t.Cleanup(srv.Close)
	return srv, tokens
}

func call(t *testing.T, method, url, token string, body []byte, accept string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, resp.Header
}

func TestAPIRolesAndResultFormats(t *testing.T) {
	f := startInProc(t, 300, "hbs", "varna")
	srv, tok := apiServer(t, f)
	studyFile := []byte("title: API\npurpose: e2e\nassociations: [hbs, varna]\non_node_failure: partial\nqueries:\n  - {id: exits_by_association, params: {from: 2020-04-01, to: 2022-09-30}}\n")
	code, raw, _ := call(t, "POST", srv.URL+"/api/v1/studies", tok["evaluator"], studyFile, "")
	if code != http.StatusCreated {
		t.Fatalf("submit: %d %s", code, raw)
	}
	var s study.Study
	json.Unmarshal(raw, &s)
	f.approveAll(t, &s)
	f.wait(t, s.ID)

	id := s.ID
	endpoints := []struct {
		method, path string
		body         []byte
		allowed      map[string]int // role -> expected status; roles not listed must get 403
	}{
		{"GET", "/api/v1/catalog", nil, map[string]int{"steering": 200, "evaluator": 200, "association:hbs": 200, "association:varna": 200, "admin": 200}},
		{"GET", "/api/v1/nodes", nil, map[string]int{"steering": 200, "admin": 200}},
		{"POST", "/api/v1/studies", []byte("title: x\n"), map[string]int{"evaluator": 422}},
		{"GET", "/api/v1/studies", nil, map[string]int{"steering": 200, "evaluator": 200, "association:hbs": 200, "association:varna": 200, "admin": 200}},
		{"GET", "/api/v1/studies/" + id, nil, map[string]int{"steering": 200, "evaluator": 200, "association:hbs": 200, "association:varna": 200, "admin": 200}},
		{"GET", "/api/v1/studies/" + id + "/approvals", nil, map[string]int{"steering": 200, "evaluator": 200, "association:hbs": 200, "association:varna": 200, "admin": 200}},
		{"POST", "/api/v1/studies/" + id + "/approvals", []byte(`{"decision":"refused","reason":"late"}`), map[string]int{"association:hbs": 409, "association:varna": 409}},
		{"GET", "/api/v1/studies/" + id + "/results", nil, map[string]int{"steering": 200, "evaluator": 200, "association:hbs": 200, "association:varna": 200, "admin": 200}},
		{"GET", "/api/v1/studies/" + id + "/results/exits_by_association", nil, map[string]int{"steering": 200, "evaluator": 200, "association:hbs": 200, "association:varna": 200, "admin": 200}},
	}
	for _, e := range endpoints {
		if c, body, _ := call(t, e.method, srv.URL+e.path, "", e.body, ""); c != http.StatusUnauthorized || !strings.Contains(string(body), `"code": "unauthenticated"`) {
			t.Errorf("%s %s without a token: %d %s", e.method, e.path, c, body)
		}
		if c, _, _ := call(t, e.method, srv.URL+e.path, "not-a-token", e.body, ""); c != http.StatusUnauthorized {
			t.Errorf("%s %s with a wrong token: %d", e.method, e.path, c)
		}
		for _, r := range roles {
			want, ok := e.allowed[r]
			if !ok {
				want = http.StatusForbidden
			}
			c, body, _ := call(t, e.method, srv.URL+e.path, tok[r], e.body, "")
			if c != want {
				t.Errorf("%s %s as %s: %d, want %d: %s", e.method, e.path, r, c, want, body)
			}
			if c >= 400 && !strings.Contains(string(body), `"code"`) {
				t.Errorf("%s %s as %s: error without a code: %s", e.method, e.path, r, body)
			}
		}
	}

	// The same released table in every format.
	base := srv.URL + "/api/v1/studies/" + id + "/results/exits_by_association"
	code, raw, _ = call(t, "GET", base, tok["steering"], nil, "application/json")
	var table api.Table
	if code != 200 || json.Unmarshal(raw, &table) != nil || len(table.Rows) == 0 {
		t.Fatalf("json: %d %s", code, raw)
	}
	rows := len(table.Rows)
	released := map[string]string{}
	for _, r := range table.Rows {
		n := ""
		if r["n"] != nil {
			n = fmt.Sprint(r["n"])
		}
		released[r["association"].(string)+"|"+r["outcome"].(string)] = n
	}
	code, raw, hdr := call(t, "GET", base, tok["steering"], nil, "text/csv")
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if code != 200 || err != nil || len(recs) != rows+1 || hdr.Get("Content-Type") != "text/csv" {
		t.Fatalf("csv: %d %v %d rows", code, err, len(recs))
	}
	for _, rec := range recs[1:] {
		if released[rec[0]+"|"+rec[1]] != rec[2] {
			t.Fatalf("csv row %v differs from json %q", rec, released[rec[0]+"|"+rec[1]])
		}
	}
	code, raw, _ = call(t, "GET", base+"?format=arrow", tok["steering"], nil, "")
	rd, err := ipc.NewReader(bytes.NewReader(raw))
	if code != 200 || err != nil || !rd.Next() || int(rd.Record().NumRows()) != rows {
		t.Fatalf("arrow: %d %v", code, err)
	}
	rd.Release()
	code, raw, _ = call(t, "GET", base, tok["steering"], nil, "application/vnd.apache.parquet")
	pf, err := file.NewParquetReader(bytes.NewReader(raw))
	if code != 200 || err != nil {
		t.Fatalf("parquet: %d %v", code, err)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil || int(tbl.NumRows()) != rows {
		t.Fatalf("parquet rows: %v", err)
	}
	// A reader not written here: hyparquet (npm, vendored for the test) with fzstd for the
	// ZSTD pages, under Node.js. It failed on every file the Arrow writer made before the
	// schema's root was written as required.
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("SAMSYN_REQUIRE_NODE") != "" {
			t.Fatal("node is required to read the Parquet download with hyparquet (apt-get install nodejs)")
		}
		t.Log("node is not installed: the Parquet download was not read with hyparquet")
	} else {
		pq := filepath.Join(t.TempDir(), "result.parquet")
		os.WriteFile(pq, raw, 0o644)
		out, err := exec.Command(nodeBin, "testdata/js/read-parquet.mjs", pq).CombinedOutput()
		if err != nil {
			t.Fatalf("hyparquet could not read the Parquet download: %v\n%s", err, out)
		}
		var got []map[string]any
		if err := json.Unmarshal(out, &got); err != nil || len(got) != rows {
			t.Fatalf("hyparquet read %d rows, want %d: %v", len(got), rows, err)
		}
		for _, r := range got {
			n := ""
			if r["n"] != nil {
				n = fmt.Sprint(r["n"])
			}
			if released[fmt.Sprint(r["association"])+"|"+fmt.Sprint(r["outcome"])] != n {
				t.Fatalf("hyparquet row %v differs from the released table", r)
			}
		}
	}
	tbl.Release()
	code, raw, _ = call(t, "GET", base+"?format=xlsx", tok["steering"], nil, "")
	x, err := excelize.OpenReader(bytes.NewReader(raw))
	if code != 200 || err != nil {
		t.Fatalf("xlsx: %d %v", code, err)
	}
	sheetRows, _ := x.GetRows("Resultat")
	notes, _ := x.GetRows("Om sekretess")
	if len(sheetRows) != rows+1 || !strings.Contains(sheetRows[0][0], "Samordningsförbund / Coordination association") || len(notes) < 3 || !strings.Contains(notes[2][0], "färre än 5") {
		t.Fatalf("xlsx: %d rows, header %v", len(sheetRows), sheetRows[0])
	}
	// The header is frozen; counts are numbers (a withheld count is empty, flagged beside it).
	if panes, err := x.GetPanes("Resultat"); err != nil || !panes.Freeze || panes.YSplit != 1 {
		t.Fatalf("xlsx: the header row is not frozen: %+v %v", panes, err)
	}
	countCol := -1
	for i, h := range sheetRows[0] {
		if h == "Antal / Count" {
			countCol = i
		}
	}
	numbers := 0
	for r := 2; r <= rows+1; r++ {
		cell, _ := excelize.CoordinatesToCellName(countCol+1, r)
		typ, _ := x.GetCellType("Resultat", cell)
		v, _ := x.GetCellValue("Resultat", cell)
		switch {
		case v == "":
		case typ == excelize.CellTypeNumber || typ == excelize.CellTypeUnset:
			if _, err := strconv.Atoi(v); err != nil {
				t.Fatalf("xlsx: count %s is %q", cell, v)
			}
			numbers++
		default:
			t.Fatalf("xlsx: count %s has type %v (%q)", cell, typ, v)
		}
	}
	if numbers == 0 {
		t.Fatal("xlsx: no count is a number")
	}
	if code, _, _ := call(t, "GET", base, tok["steering"], nil, "image/png"); code != http.StatusNotAcceptable {
		t.Fatalf("an unknown format: %d", code)
	}
}

// TestConcurrentStudiesAndApprovalsAllSucceed: 100 studies submitted and approved by two
// associations at once, through the API: every stored decision is answered 200, a second
// decision 409, and every study is released.
func TestConcurrentStudiesAndApprovalsAllSucceed(t *testing.T) {
	f := startInProc(t, 100, "hbs", "varna")
	srv, tok := apiServer(t, f)
	do := func(method, url, token string, body []byte) (int, []byte, error) {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		return resp.StatusCode, raw, err
	}
	const n = 100
	studies := make([]study.Study, n)
	errs := make(chan error, 3*n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			body := fmt.Sprintf("title: Samtidig %d\npurpose: e2e\nassociations: [hbs, varna]\non_node_failure: partial\nqueries:\n  - {id: exits_by_association, params: {from: 2021-01-01, to: 2021-12-31}}\n", i)
			code, raw, err := do("POST", srv.URL+"/api/v1/studies", tok["evaluator"], []byte(body))
			if err != nil || code != http.StatusCreated {
				errs <- fmt.Errorf("submit %d: %d %s %v", i, code, raw, err)
				return
			}
			json.Unmarshal(raw, &studies[i])
		}()
	}
	wg.Wait()
	approve := func(s study.Study, assoc string) (int, []byte, error) {
		var sigs [][]byte
		for _, q := range s.Queries {
			sigs = append(sigs, ed25519.Sign(f.assocKeys[assoc], wire.ApprovalMessage(s.ID, assoc, q.ID, q.Hash, q.Params)))
		}
		body, _ := json.Marshal(api.Decision{Decision: study.Approve, Signatures: sigs})
		return do("POST", srv.URL+"/api/v1/studies/"+s.ID+"/approvals", tok["association:"+assoc], body)
	}
	for i := range n {
		for _, assoc := range []string{"hbs", "varna"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				if code, raw, err := approve(studies[i], assoc); err != nil || code != http.StatusOK {
					errs <- fmt.Errorf("approve %s for %s: %d %s %v", studies[i].ID, assoc, code, raw, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if code, raw, _ := approve(studies[0], "hbs"); code != http.StatusConflict {
		t.Fatalf("a second decision: %d %s", code, raw)
	}
	for _, s := range studies {
		if got := f.wait(t, s.ID); got.State != study.Released {
			t.Fatalf("study %s ended %s", s.ID, got.State)
		}
	}
}

// TestBadInputIs4xxAndAStorageFailureIs5xxWithoutDatabaseText: a NUL in a study title is the
// client's to fix (422, nothing stored); a store that fails is the coordinator's (5xx, a
// generic message, no database text).
func TestBadInputIs4xxAndAStorageFailureIs5xxWithoutDatabaseText(t *testing.T) {
	f := startInProc(t, 50, "hbs", "varna")
	srv, tok := apiServer(t, f)
	nul := []byte("title: \"Utfall\\0\"\npurpose: e2e\nqueries:\n  - {id: exits_by_association, params: {from: 2021-01-01, to: 2021-12-31}}\n")
	code, raw, _ := call(t, "POST", srv.URL+"/api/v1/studies", tok["evaluator"], nul, "")
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(raw), "control") {
		t.Fatalf("a NUL in the title: %d %s", code, raw)
	}
	if list, _ := f.store.Studies(context.Background(), ""); len(list) != 0 {
		t.Fatalf("a refused study was stored: %d", len(list))
	}
	f.coord.Stop()
	f.store.Close() // the store fails from here on
	good := []byte("title: Utfall\npurpose: e2e\nqueries:\n  - {id: exits_by_association, params: {from: 2021-01-01, to: 2021-12-31}}\n")
	for _, c := range []struct {
		method, path string
		body         []byte
	}{{"POST", "/api/v1/studies", good}, {"GET", "/api/v1/studies", nil}} {
		code, raw, _ := call(t, c.method, srv.URL+c.path, tok["evaluator"], c.body, "")
		if code < 500 || strings.Contains(string(raw), "sql") || strings.Contains(strings.ToLower(string(raw)), "database is") {
			t.Fatalf("%s %s with a failing store: %d %s", c.method, c.path, code, raw)
		}
	}
}
