package main

import (
	"net/http"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/api"
	"github.com/samsyn/samsyn/coordinator/dashboard"
	"github.com/samsyn/samsyn/coordinator/state"
)

// dashboardRoutes adds the steering group's dashboard, with the associations' plans, to the
// coordinator's mux.
func dashboardRoutes(plans map[string]int) func(mux *http.ServeMux, _ *api.Server, _ *coordinator.Coordinator, _ *state.Store) {
	return func(mux *http.ServeMux, _ *api.Server, _ *coordinator.Coordinator, _ *state.Store) {
		dashboard.Register(mux, plans)
	}
}
