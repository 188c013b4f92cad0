# banger: `make run` to get going, `make test` to check everything.
SHELL := /bin/bash
# A fresh Debian machine has Go in /usr/local/go but not always on PATH.
export PATH := /usr/local/go/bin:$(PATH)

BIN       := bin
LDFLAGS   := -X github.com/bangerdev/banger/internal/version.buildDate=$(shell date -u +%Y-%m-%dT%H:%M:%SZ)
JOBS      ?= $(shell nproc)
# Test images built once per machine (scripts/testimages.sh).
TEST_CACHE ?= /var/cache/banger-test
FUZZTIME  ?=

# Fuzz targets run briefly by `make test`, one a line in
# test/fuzzcampaign/targets.txt (package:target:executions).
FUZZ_TARGETS := $(shell grep -v '^\#' test/fuzzcampaign/targets.txt)

.PHONY: release all deps deps-run binaries testimages build build-crash reliability test fmt-check vet unit fuzz vmtest smoke bench bench-image bench-boot bench-disk bench-vm bench-workspace bench-net bench-snapshot bench-mcp bench-e2b e2b-suite lint run clean

all: build

# What building and testing need; deps-run only what running does.
deps:
	@scripts/deps.sh

deps-run:
	@scripts/deps.sh run

build: deps
	@$(MAKE) --no-print-directory binaries

binaries:
	CGO_ENABLED=0 go build -buildvcs=auto -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/banger ./cmd/bangerd
	# The agent is copied into every guest at boot: stripped, it boots faster.
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $(BIN)/ ./cmd/banger-agent

# The daemon and CLI with crash points compiled in (internal/crashpoint),
# for the reliability campaign; never installed or released.
build-crash: build
	CGO_ENABLED=0 go build -tags crashpoints -ldflags "$(LDFLAGS)" -o $(BIN)/crash/ ./cmd/banger ./cmd/bangerd
	cp $(BIN)/banger-agent $(BIN)/crash/

# A signed release in dist/: make release VERSION=1.2.3 KEY=FILE (a
# minisign private key; go run ./cmd/banger-release -genkey FILE makes one).
release: deps
	@[ -n "$(VERSION)" ] && [ -n "$(KEY)" ] || { echo "usage: make release VERSION=1.2.3 KEY=FILE (a minisign private key; go run ./cmd/banger-release -genkey FILE makes a pair)" >&2; exit 2; }
	rm -rf dist/build-$(VERSION)
	CGO_ENABLED=0 go build -buildvcs=auto -ldflags "$(LDFLAGS) -X github.com/bangerdev/banger/internal/version.Version=$(VERSION)" -o dist/build-$(VERSION)/ ./cmd/banger ./cmd/bangerd
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/bangerdev/banger/internal/version.Version=$(VERSION)" -o dist/build-$(VERSION)/ ./cmd/banger-agent
	go run ./cmd/banger-release -version $(VERSION) -key $(KEY) -bin dist/build-$(VERSION) -out dist
	rm -rf dist/build-$(VERSION)
	@ls -l dist/

fmt-check:
	@files=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	if [[ -n "$$files" ]]; then echo "gofmt needed on:"; echo "$$files"; exit 1; fi

vet: deps
	go vet ./...

# Root-only tests (loop-mounting built images) must run, not skip, here.
unit: deps
	BANGER_ROOT_TESTS=1 go test -race -count=1 ./...
	go test -race -count=1 -tags crashpoints ./internal/crashpoint/

# Minimization is off: the short runs are for finding, not shrinking.
# The check first: every fuzz target of the module must be in the list.
fuzz: deps
	@go run ./test/fuzzcampaign -check $(FUZZ_TARGETS)
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; n=$${rest##*:}; \
		budget=$(if $(FUZZTIME),$(FUZZTIME),$${n}x); \
		echo "fuzz $$pkg $$name ($$budget)"; \
		out=$$(go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$budget -fuzzminimizetime 0 $$pkg 2>&1) || { echo "$$out" | tail -40; exit 1; }; \
	done

testimages: deps
	@BANGER_TEST_CACHE=$(TEST_CACHE) scripts/testimages.sh >/dev/null

smoke: build build-crash testimages
	go run ./test/smoke -bin $(BIN) -crashbin $(BIN)/crash -jobs $(JOBS) -registry .tools/registry \
		-debian $(TEST_CACHE)/debian-bookworm-minbase.tar.gz \
		-systemd $(TEST_CACHE)/debian-bookworm-systemd.tar.gz \
		-kernel-deb $$(ls $(TEST_CACHE)/linux-image-*.deb | head -1) $(if $(RUN),-run '$(RUN)')

# Real VMs under QEMU (TCG here): Debian's kernel, banger's initramfs and
# agent, images flattened by banger.
vmtest: testimages
	BANGER_VM_TESTS=1 BANGER_ROOT_TESTS=1 BANGER_TEST_CACHE=$(TEST_CACHE) go test -count=1 -timeout 20m ./test/vmtest/

test: deps fmt-check vet unit fuzz vmtest smoke

# The reliability campaign (docs/RELIABILITY.md): the daemon killed at
# every crash point of its requests, RUNS times each (default 3); restarts
# with many VMs; full disks; the soak (SOAK_CYCLES from SOAK_CLIENTS); every
# fuzz target for FUZZ_BUDGET (default 2m) of fuzzing.
reliability: build build-crash testimages
	go run ./test/smoke -bin $(BIN) -crashbin $(BIN)/crash -jobs 1 -registry .tools/registry \
		-kernel-deb $$(ls $(TEST_CACHE)/linux-image-*.deb | head -1) \
		-campaign -run '^(crash-points|restart-many|restart-many-installed|full-disks|soak|vm-workspace-large)$$' -crash-runs $(or $(RUNS),3) -soak-cycles $(or $(SOAK_CYCLES),200) -soak-clients $(or $(SOAK_CLIENTS),4) -crash-report docs/RELIABILITY.md -timeout 3h
	go run ./test/fuzzcampaign -time $(or $(FUZZ_BUDGET),2m) -report docs/RELIABILITY.md

bench: deps bench-image bench-boot bench-disk bench-vm bench-workspace bench-net bench-snapshot bench-mcp bench-e2b
	@scripts/bench.sh

# VM create cost and create-to-first-command, small vs large image, with
# the bare-QEMU floor beside them.
bench-vm: build testimages
	BANGER_TEST_CACHE=$(TEST_CACHE) go run ./bench/vm -bin $(BIN) -crane .tools/crane -runs $(or $(RUNS),3)

# Cold create, suspend and resume to first command beside the bare-QEMU floor.
bench-snapshot: build testimages
	BANGER_TEST_CACHE=$(TEST_CACHE) go run ./bench/snapshot -bin $(BIN) -crane .tools/crane -runs $(or $(RUNS),3)

# echo through banger mcp (stdio, HTTP) against banger vm exec and the
# daemon's own round trip, p50 and p95.
bench-mcp: build testimages
	BANGER_TEST_CACHE=$(TEST_CACHE) go run ./bench/mcp -bin $(BIN) -crane .tools/crane -runs $(or $(RUNS),30)

# E2B's own JS SDK test suite against this daemon's E2B API (the E2B
# source from E2B_GIT, else GitHub); not part of test: see docs/e2b.md.
e2b-suite: build testimages
	BANGER_TEST_CACHE=$(TEST_CACHE) scripts/e2b-suite.sh

# Sandbox.create() then commands.run("echo hi") through the E2B JS SDK
# against banger vm run --rm, and commands.run against vm exec.
bench-e2b: build testimages
	BANGER_TEST_CACHE=$(TEST_CACHE) go run ./bench/e2b -bin $(BIN) -crane .tools/crane -runs $(or $(RUNS),20)

# Boot to agent-ready against plain QEMU to the first userspace line.
bench-workspace: build testimages
	BANGER_TEST_CACHE=$(TEST_CACHE) go run ./bench/workspace -bin $(BIN) -crane .tools/crane -runs $(or $(RUNS),1)

# The bridge network's egress (root): a download through NAT and through
# an allow-list, and the daemon's DNS against a direct query.
bench-net: build testimages
	BANGER_TEST_CACHE=$(TEST_CACHE) go run ./bench/net -bin $(BIN) -crane .tools/crane -runs $(or $(RUNS),5)

# The work disk's cache mode: cache=unsafe against cache=writeback, on
# writes that flush.
bench-disk: testimages
	BANGER_TEST_CACHE=$(TEST_CACHE) go run ./bench/disk -runs $(or $(RUNS),3)

bench-boot: testimages
	BANGER_TEST_CACHE=$(TEST_CACHE) go run ./bench/boot -runs $(or $(RUNS),7)

# Pull + flatten of a Debian image against crane + tar + mkfs.ext4.
bench-image: build testimages
	go run ./bench/image -bin $(BIN) -registry .tools/registry -crane .tools/crane \
		-debian $(TEST_CACHE)/debian-bookworm-minbase.tar.gz -runs $(or $(RUNS),5)

lint: deps fmt-check vet
	go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Only what running needs (deps-run), then the daemon, a kernel and the
# development image (built from Debian's mirror), then a shell in VM
# "dev"; ARGS="..." runs that command in it instead.
run: deps-run
	@$(MAKE) --no-print-directory binaries
	@BIN=$(BIN) ARGS='$(subst ','\'',$(ARGS))' scripts/run.sh

clean:
	rm -rf $(BIN)
