# kmd — see README.md. `make run` starts the daemon on ./var; `make test`
# runs every test (lint first).
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
VAR     ?= $(CURDIR)/var

.PHONY: all build run test test-reliability lint cover bench bench-micro clean
all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/kmd ./cmd/kmd
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/kmctl ./cmd/kmctl

# The daemon on ./var: embedded SQLite stores, local key files, socket
# ./var/kmd.sock, log to the terminal. Ctrl-C stops it cleanly.
run: build
	mkdir -p $(VAR)
	@echo "kmd on $(VAR); in another terminal: export KMD_SOCKET=$(VAR)/kmd.sock; bin/kmctl cluster status"
	exec bin/kmd --data-dir $(VAR) --socket $(VAR)/kmd.sock --log-file - --log-format console

test: lint
	$(GO) test -race -count=1 -timeout 15m ./...

# The full reliability run, tens of minutes: the crash, fault and
# bad-input suites at full size (>= 200 kill -9), then each fuzz target for
# FUZZTIME. See RELIABILITY.md.
test-reliability: lint
	GO=$(GO) ./scripts/test-reliability.sh

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './var/*')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

cover:
	$(GO) test -count=1 -coverprofile=coverage.out ./provider/ ./rekey/ ./domains/
	$(GO) tool cover -func=coverage.out | tail -1

# Benchmarks print figures; they assert nothing about time. `make bench`
# measures the rekey through the real daemon against its floors and
# SQLCipher and writes BENCHMARKS.md (about 15 minutes); bench-micro runs
# the Go benchmarks of the crypto and the engine.
bench:
	$(GO) run ./bench -out BENCHMARKS.md

bench-micro:
	$(GO) test -run '^$$' -bench . -count 1 ./provider/
	$(GO) test -run '^$$' -bench . -benchtime 3x -count 1 ./rekey/

clean:
	rm -rf bin coverage.out reliability.log
