package main

import (
	"net/http"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/api"
	"github.com/samsyn/samsyn/coordinator/state"
)

// dashboardRoutes adds the steering group's dashboard to the coordinator's mux.
func dashboardRoutes(mux *http.ServeMux, a *api.Server, c *coordinator.Coordinator, s *state.Store) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<!doctype html><html lang="sv"><head><meta charset="utf-8"><title>Samsyn</title></head>
<body><h1>Samsyn</h1><p>Koordinatorn körs. API: <code>/api/v1/catalog</code>, <code>/api/v1/studies</code>, <code>/api/v1/nodes</code> (Bearer-token krävs).</p>
<p>The coordinator is running. The steering group's dashboard is being built; released results are available through the API.</p></body></html>`))
	})
}
