# Targets behind the README's commands. Go 1.26 or newer is the only
# requirement; `bash .ci/run` installs what a clean machine lacks.
GO ?= go

.PHONY: all build dev test test-nomad test-nomad-testserver check validate-examples fuzz bench bench-controller reliability clean

all: check test

build:
	$(GO) build -o bin/ ./cmd/...

# The README's first command: the controller with its own Nomad (a real
# `nomad agent -dev` when nomad is on PATH, else the in-process test
# server) and a temporary data dir, the examples applied and shown running.
# Built, then run, rather than `go run`, which exits 1 on Ctrl-C even when
# the controller stopped cleanly: Ctrl-C ends it quietly.
dev:
	@$(GO) build -o bin/controller ./cmd/controller
	@./bin/controller -dev -dev-apply examples/

# The README's test command: every package, with the race detector; then
# two long loops again without it, at full length: the store's churn test
# (100,000 cycles; 10,000 under -race) and the readiness check after
# 1,000 updates (100 under -race), which the race detector slows several
# times over.
test:
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run '^TestChurnKeepsTheFileBounded$$' ./internal/store
	$(GO) test -count=1 -run '^TestReadyAfterEveryUpdateNamesTheCurrentVersion$$' ./internal/reconcile

# The tests that need a Nomad cluster, named by NOMAD_ADDR (they skip
# without it): test/nomad runs the built controller and akctl through
# convergence, updates, drift, a foreign job, SIGKILLs and deletion and
# counts the controller's Nomad requests; the others check drift repairs
# and renderings against what the agent stores. They create and purge
# jobs agentkernel-rn-* and agentkernel-real-* (and a few more), a
# namespace "agents" and a node pool "sandboxes"; point them at a
# disposable cluster with raw_exec enabled, never at one that matters
# (docs/development.md, "Testing against a Nomad cluster").
test-nomad:
	$(GO) test -tags realnomad -count=1 -run '^TestRealNomad' ./...

# The same against the Nomad test server in a process of its own, as CI
# runs it.
test-nomad-testserver:
	bash .ci/with-nomad-test-server $(MAKE) test-nomad

# Static checks CI runs before the tests.
check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@# The suites behind build tags compile and vet clean too.
	$(GO) vet -tags realnomad,reliability ./...
	@# internal/spec is the leaf every other package builds on.
	@mod=$$($(GO) list -m); \
	  if $(GO) list -deps ./internal/spec | grep "^$$mod/internal/" | grep -qv "^$$mod/internal/spec$$"; then \
	  echo "internal/spec must not import other internal packages"; exit 1; fi

validate-examples:
	$(GO) run ./cmd/akctl validate examples/

# Bounded fuzzing of every fuzz target, FUZZTIME each: HCL loading, the
# API's request decoding, the Nomad event-stream reader. Inputs that once
# failed or widened coverage are kept under each package's testdata/fuzz
# and run by the ordinary tests. One worker each: on two cores, parallel
# workers starve each other.
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./internal/spec -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) -parallel 1
	$(GO) test ./internal/api -run '^$$' -fuzz '^FuzzRequestDecoding$$' -fuzztime $(FUZZTIME) -parallel 1
	$(GO) test ./internal/nomad -run '^$$' -fuzz '^FuzzEventStream$$' -fuzztime $(FUZZTIME) -parallel 1

# Benchmarks with the baselines they are reported against (docs/benchmarks.md).
bench:
	$(GO) test ./internal/spec -run '^$$' -bench . -benchmem -count 5
	$(GO) test ./internal/store -run '^$$' -bench . -benchtime 5x -count 3
	$(GO) test ./internal/replica -run '^$$' -bench . -benchtime 5x -count 3

# The long, process-level tests, kept out of the default run: the
# controller SIGKILLed 20 times while 500 sandboxes converge and change,
# a controller put through Nomad outages, errors, latency and gaps, and
# three -ha controllers whose leader is SIGKILLed three times.
reliability:
	$(GO) test -tags reliability -count=1 -v ./test/reliability/

# The controller's own measurements against the Nomad test server (docs/benchmarks.md).
bench-controller:
	$(GO) run ./cmd/akbench -n 100,1000 -json bench-controller.json

clean:
	rm -rf bin
