package dashboard

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strconv"
	"strings"

	"github.com/samsyn/samsyn/schemas"
)

//go:embed static
var static embed.FS

// Tile is one municipality on the tile map.
type Tile struct {
	Code        string       `json:"code"`
	Label       schemas.Text `json:"label"`
	Association string       `json:"association,omitempty"` // empty: outside the federation
	Row         int          `json:"row"`
	Col         int          `json:"col"`
}

// Layout is what the dashboard needs from the code lists.
type Layout struct {
	Municipalities []Tile                  `json:"municipalities"`
	Associations   map[string]schemas.Text `json:"associations"`
	Outcomes       map[string]string       `json:"outcome_groups"` // outcome code -> group
	// Plans is each association's planned number of participants over the project period.
	Plans map[string]int `json:"plans"`
}

func layout() Layout {
	s := schemas.V1()
	l := Layout{Associations: map[string]schemas.Text{}, Outcomes: map[string]string{}}
	mun, _ := s.CodeList("municipality")
	for _, c := range mun.Codes {
		t := Tile{Code: c.Code, Label: c.Label(), Association: c.Attrs["association"]}
		if rc := strings.Split(c.Attrs["tile"], ","); len(rc) == 2 {
			t.Row, _ = strconv.Atoi(rc[0])
			t.Col, _ = strconv.Atoi(rc[1])
		}
		l.Municipalities = append(l.Municipalities, t)
	}
	assoc, _ := s.CodeList("association")
	for _, c := range assoc.Codes {
		l.Associations[c.Code] = c.Label()
	}
	out, _ := s.CodeList("outcome")
	for _, c := range out.Codes {
		l.Outcomes[c.Code] = c.Attrs["group"]
	}
	return l
}

// csp allows only the dashboard's own files and API.
const csp = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"

// Register adds the dashboard to mux: / and /dashboard/*.
func Register(mux *http.ServeMux, plans map[string]int) {
	sub, _ := fs.Sub(static, "static")
	files := http.FileServer(http.FS(sub))
	secure := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", csp)
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Referrer-Policy", "no-referrer")
			h.ServeHTTP(w, r)
		})
	}
	mux.Handle("GET /dashboard/", secure(http.StripPrefix("/dashboard/", files)))
	mux.Handle("GET /{$}", secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := static.ReadFile("static/index.html")
		if err != nil {
			http.Error(w, "dashboard missing", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(raw)
	})))
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	l := layout()
	l.Plans = plans
	if l.Plans == nil {
		l.Plans = map[string]int{}
	}
	body, _ := json.Marshal(l)
	mux.Handle("GET /dashboard/layout.json", secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})))
}
