# kubespawn: `make demo` runs the incident replay on a local control plane,
# `make test` runs every test (unit and integration) with the race detector.
# The control plane (etcd, kube-apiserver) is built from the Go module proxy
# into bin/ on first use and reused afterwards.

SHELL := /usr/bin/env bash
# Go from PATH, else the machine's standard install.
GO    ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN   := $(CURDIR)/bin
export KUBESPAWN_BIN_DIR := $(BIN)

K8S_VERSION := v1.37.2
VERSION_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z

TOOLS_MOD := internal/tools/go.mod internal/tools/go.sum

.PHONY: all tools test test-unit check-tracked demo soak bench bench-scale localcluster vet fmt clean help prometheus

all: test

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

tools: $(BIN)/kube-apiserver $(BIN)/etcd $(BIN)/kube-controller-manager ## build the control plane into bin/ (first time: ~6-12 min)

$(BIN)/kube-apiserver: $(TOOLS_MOD)
	@$(GO) version >/dev/null 2>&1 || { echo "Go 1.26 is required: install it from https://go.dev/dl and re-run"; exit 1; }
	@echo ">> building kube-apiserver $(K8S_VERSION) from the Go module proxy (first time: several minutes)"
	@mkdir -p $(BIN)
	cd internal/tools && $(GO) build -ldflags '$(VERSION_LDFLAGS)' -o $@.tmp k8s.io/kubernetes/cmd/kube-apiserver
	@mv $@.tmp $@

$(BIN)/etcd: $(TOOLS_MOD)
	@echo ">> building etcd from the Go module proxy"
	@mkdir -p $(BIN)
	cd internal/tools && $(GO) build -o $@.tmp go.etcd.io/etcd/server/v3
	@mv $@.tmp $@

# The garbage collector and namespace controller of the tests that need them
# (testcluster.Options.ControllerManager).
$(BIN)/kube-controller-manager: $(TOOLS_MOD)
	@echo ">> building kube-controller-manager $(K8S_VERSION) from the Go module proxy"
	@mkdir -p $(BIN)
	cd internal/tools && $(GO) build -ldflags '$(VERSION_LDFLAGS)' -o $@.tmp k8s.io/kubernetes/cmd/kube-controller-manager
	@mv $@.tmp $@

# The unit tier: every test that needs no control plane (fake clientsets,
# fake clocks, pure logic), i.e. every file without the integration build
# tag. Needs neither bin/ nor root. Its fake-clock tests mostly wait, so
# they run 16 at a time.
test-unit: ## unit tests only: no control plane, no bin/, no root (under a minute warm)
	$(GO) vet ./...
	$(GO) test -race -count=1 -parallel 16 ./...

# go test starts the packages' test binaries -p at a time in the order it is
# given them, so the longest (measured: a hub with real servers, the soak,
# the event flood, the reflector's rules) go first rather than last: on
# 2 cores that took the filing-day set of tests from 4 m 28 s to 4 m 07 s.
MODULE := github.com/kubespawn/kubespawn
LONG_TEST_PKGS := ./examples/jupyterhub ./internal/soak ./events ./reflector ./examples/incident-replay
TEST_PKGS = $(LONG_TEST_PKGS) $(filter-out $(foreach p,$(LONG_TEST_PKGS),$(MODULE)/$(p:./%=%)),$(shell $(GO) list ./...))

test: check-tracked tools jupyterhub prometheus chromium ## run all tests, integration included, with -race
	$(GO) vet -tags integration ./...
	$(GO) test -tags integration -race -count=1 -parallel 8 -p 4 -timeout 25m $(TEST_PKGS)

demo: tools ## replay the 2018 incident: baseline vs kubespawn, leak table
	$(GO) run ./examples/incident-replay

# examples/jupyterhub drives Debian's JupyterHub 3.0 (its tests are part of
# make test): installed with apt-get when missing.
.PHONY: jupyterhub demo-jupyterhub chromium bench-jupyterhub
jupyterhub: ## install Debian's JupyterHub 3.0 if missing (apt-get, as root; ~1-2 min)
	@.ci/apt-install "JupyterHub 3.0" "~1-2 min" \
	  "[ -x /usr/bin/jupyterhub ] && /usr/bin/python3 -c 'import jupyterhub' 2>/dev/null" \
	  "/usr/bin/python3 -c 'import jupyterhub'" -- jupyterhub

# The alert rules' tests (examples/sidecar: promtool check rules, promtool
# test rules, a live Prometheus) use Debian's prometheus 2.42 (server and
# promtool): installed with apt-get when missing.
prometheus: ## install Debian's Prometheus 2.42 and promtool if missing (apt-get, as root; ~10s)
	@.ci/apt-install "Prometheus 2.42 and promtool" "~10s" \
	  "[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]" \
	  "/usr/bin/promtool --version" -- --no-install-recommends prometheus

# The browser tests (examples/jupyterhub) drive Debian's chromium headless
# through chromedp.
chromium: ## install Debian's chromium if missing (apt-get, as root; ~1 min)
	@.ci/apt-install chromium "~1 min" "[ -x /usr/bin/chromium ]" \
	  "/usr/bin/chromium --version" -- --no-install-recommends chromium

demo-jupyterhub: tools jupyterhub chromium ## the 2018 incident, real JupyterHub + 50 real notebook servers: leak table, screenshot (~2.5 min, ~5 GB RAM)
	$(GO) run ./examples/jupyterhub

soak: tools ## 1,000 start/stop cycles under random faults, kubespawn vs the 2018 replica (SOAK_SEED replays)
	$(GO) build -o $(BIN)/soak ./internal/cmd/soak
	$(BIN)/soak

bench: tools ## the performance table of BENCHMARKS.md at 1,000 and 10,000 pods, and the Go benchmarks
	@mkdir -p out
	set -o pipefail; $(GO) run ./internal/cmd/bench -sizes 1000,10000 -json out/bench.json | tee out/bench.txt
	set -o pipefail; $(GO) test -tags integration -run '^$$' -bench 'Get' -benchmem -count 6 -timeout 20m ./reflector/ | tee out/bench-get.txt
	$(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da -col /impl out/bench-get.txt
	$(GO) test -tags integration -run '^$$' -bench 'EventCacheMemory/kubespawn' -benchmem -count 1 -timeout 20m ./events/
	$(GO) test -tags integration -run '^$$' -bench 'EventCacheMemory/informer' -benchmem -count 1 -timeout 20m ./events/

bench-scale: tools ## P3, P4, P8, P9 at 1,000, 10,000 and 100,000 pods (see BENCHMARKS.md)
	@mkdir -p out
	set -o pipefail; $(GO) run ./internal/cmd/bench -sizes 1000,10000,100000 -figures P3,P4,P8,P9 -json out/bench-scale.json | tee out/bench-scale.txt

bench-jupyterhub: tools jupyterhub ## P11: 50 real single-user servers started through the real hub (~2 min)
	$(GO) run ./examples/jupyterhub -bench-starts 50

localcluster: tools ## start a local control plane + pod simulator and write a kubeconfig
	$(GO) run ./internal/cmd/localcluster

vet: ## go vet (both tiers) and gofmt check
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

check-tracked: ## fail when a tracked file is binary or larger than 1 MiB
	@bash .ci/check-tracked

clean: ## remove built binaries
	rm -rf $(BIN)
