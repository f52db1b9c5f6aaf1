// Package monitoring holds what an operator loads into their monitoring: Prometheus alert
// rules (alerts.yml, unit-tested by alerts_test.yml) and a Grafana dashboard
// (grafana-dashboard.json). It has no Go code of its own; its test checks that every metric
// the rules and the dashboard use is one the daemons export, and runs promtool on the rules.
package monitoring
