# Samsyn: federated analytics for the MIA coordination associations.
# `make` alone lists the targets.

SHELL := bash
GO ?= go
export CGO_ENABLED := 1
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
TOOLS := $(CURDIR)/bin/tools
BENCH ?= .
BENCHTIME ?= 1x
DEMO_FLAGS ?=

.DEFAULT_GOAL := help
.PHONY: bench-limits help build demo test test-e2e bench bench-import lint fmt tidy-check clean

help: ## List the targets
	@grep -hE '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

PLUGINS := km logit pathways

build: ## Build bin/samsyn and the analysis plugins bin/samsyn-analysis-*
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/samsyn ./cmd/samsyn
	@for p in $(PLUGINS); do CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/samsyn-analysis-$$p ./cmd/samsyn-analysis-$$p || exit 1; done

demo: build ## Start the whole federation locally on synthetic data (Ctrl-C stops it)
	bin/samsyn demo $(DEMO_FLAGS)

test: ## Run every test with the race detector, whole-federation tests included
	$(GO) test -race -timeout 30m ./...
	cd deploy/adbc && $(GO) test -race -timeout 10m ./...   # a Flight SQL client we did not write (own module: older Arrow)

test-e2e: ## Run only the whole-federation tests (real processes, real mTLS)
	$(GO) test -race -timeout 20m -run 'E2E|Federation|Demo' ./deploy/e2e/...

bench: ## Run the benchmarks (BENCH=regexp, BENCHTIME=1x); figures go to docs/benchmarks.md
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem -timeout 60m ./...

bench-import: ## Import 1,000,000 participants from CSV against DuckDB's own read_csv
	$(GO) test -run '^$$' -bench 'ImportVsReadCSV' -benchtime 1x -timeout 30m ./node/importer/

bench-limits: ## Every speed target of DESIGN.md side by side with plain DuckDB (about 15 minutes; SAMSYN_BENCH_N=1000000 for the 8 x 1 M headline)
	SAMSYN_BENCH_NODE_ROWS=1000000 $(GO) test -run '^$$' -timeout 30m -benchtime 5x -bench 'RunVsDirect/(exits_by_municipality|outcome_by_method|participants_by_association)$$' ./node/executor/
	SAMSYN_BENCH_NODE_ROWS=237 $(GO) test -run '^$$' -benchtime 100x -bench 'RunVsDirect/(exits_by_municipality|outcome_by_method|participants_by_association)$$' ./node/executor/
	$(GO) test -run '^$$' -timeout 30m -benchtime 3x -bench 'FederatedVsPlain' ./deploy/e2e/
	$(GO) test -run '^$$' -benchtime 300x -bench 'Query(EightNodes|OneNodeCold)' ./deploy/e2e/
	$(GO) test -run '^$$' -benchtime 300x -bench 'StudiesPerSecond' ./deploy/e2e/
	$(GO) test -run '^$$' -benchtime 1x -timeout 30m -bench 'ImportVsReadCSV' ./node/importer/
	SAMSYN_BENCH_MEMORY_LIMIT=200MB $(GO) test -run '^$$' -benchtime 1x -timeout 20m -bench 'NodeRSS' ./node/executor/

lint: ## go vet, staticcheck, import directions, alert rules and dashboard queries (promtool), units' hardening, Kubernetes manifests and Dockerfile
	$(GO) vet ./...
	@test -x $(TOOLS)/staticcheck || GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	$(TOOLS)/staticcheck ./...
	bash .ci/check-imports
	@command -v promtool >/dev/null || { echo "promtool is needed to check the alert rules (apt-get install prometheus)"; exit 1; }
	promtool check rules deploy/monitoring/alerts.yml
	cd deploy/monitoring && promtool test rules alerts_test.yml alerts_data_test.yml
	python3 deploy/monitoring/dashboard-queries.py deploy/monitoring/grafana-dashboard.json >/tmp/samsyn-dashboard-rules.json && promtool check rules /tmp/samsyn-dashboard-rules.json   # every panel's PromQL parses
	@command -v systemd-analyze >/dev/null || { echo "systemd-analyze is needed to check the units' hardening (apt-get install systemd)"; exit 1; }
	for u in deploy/systemd/*.service; do systemd-analyze security --offline=yes --threshold=20 "$$u" >/tmp/samsyn-unit-security.txt || { cat /tmp/samsyn-unit-security.txt; echo "$$u: exposure above 2.0"; exit 1; }; tail -n 1 /tmp/samsyn-unit-security.txt; done
	cd deploy/lint && $(GO) vet ./... && $(GO) test ./...   # Kubernetes manifests and Dockerfile through their own parsers (own module)

fmt: ## Format every Go file
	gofmt -w $$(git ls-files '*.go')

tidy-check: ## Fail if go mod tidy would change go.mod or go.sum
	@tmp=$$(mktemp -d); cp go.mod go.sum $$tmp/; $(GO) mod tidy; \
	if ! cmp -s $$tmp/go.mod go.mod || ! cmp -s $$tmp/go.sum go.sum; then \
		diff -u $$tmp/go.mod go.mod; cp $$tmp/go.mod $$tmp/go.sum .; \
		echo "go mod tidy would change go.mod or go.sum: run it and commit"; exit 1; fi; \
	echo "go.mod and go.sum are tidy"

clean: ## Remove build output
	rm -rf bin
