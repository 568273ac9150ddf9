# Petrel build, test and demo. `make` alone lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/petrel-net/petrel/agent/internal/version.Version=$(VERSION) -X github.com/petrel-net/petrel/dns/internal/daemon.Version=$(VERSION) -X main.version=$(VERSION)
BIN      := $(CURDIR)/bin
TOOLS    := $(CURDIR)/.tools/bin
TESTDIR  := $(CURDIR)/.test

# Generator versions pinned so that `make proto` reproduces the committed code.
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
PROTOS             := proto/petrel/v1/petrel.proto proto/petrel/v1/service.proto
PROTOC_FLAGS        = --go_out=$(1) --go_opt=module=github.com/petrel-net/petrel \
                      --go-grpc_out=$(1) --go-grpc_opt=module=github.com/petrel-net/petrel

# Every main package under <top>/cmd/ (agent, isolator, dns, ...).
MAINS = $(shell $(GO) list -f '{{if eq .Name "main"}}{{.Dir}}{{end}}' $(patsubst %,./%/...,$(wildcard */cmd)))

TEST_TIMEOUT ?= 60m
TEST_PKGS    ?= ./...
PARTS        ?= ipam cni multihost policy docker dns
OUT          ?= /tmp/petrel-bench

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build every binary (petreld, petrelctl, shims, dns) into bin/
	@mkdir -p $(BIN)
	@for d in $(MAINS); do \
		name=$$(basename $$d); \
		echo "go build $$name"; \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$name $$d || exit 1; \
	done

.PHONY: deps
deps: ## install the Debian packages the tests and demo need, if missing (as root)
	@.ci/deps

.PHONY: test
test: deps lint proto-check ## lint, proto-check, then go test -race ./... (fails on skipped root tests when run as root)
	@TEST_TIMEOUT=$(TEST_TIMEOUT) TESTDIR=$(TESTDIR) .ci/gotest $(TEST_PKGS)

.PHONY: test-unit
test-unit: ## go test -race without lint and proto-check
	@TEST_TIMEOUT=$(TEST_TIMEOUT) TESTDIR=$(TESTDIR) .ci/gotest $(TEST_PKGS)

.PHONY: check
check: test ## lint + proto-check + test

.PHONY: demo
demo: deps build ## start petreld on an embedded etcd and walk through the features (needs root)
	@deploy/demo/demo.sh

.PHONY: bench
bench: deps build ## run every benchmark beside its baseline (PARTS="ipam cni multihost policy docker dns", OUT=dir; root)
	@PARTS="$(PARTS)" OUT="$(OUT)" framework-tests/bench/all.sh

.PHONY: lint
lint: ## gofmt -l and go vet
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: tools
tools: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc ## install the pinned protoc plugins into .tools/bin

$(TOOLS)/protoc-gen-go:
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO)

$(TOOLS)/protoc-gen-go-grpc:
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO_GRPC)

.PHONY: proto
proto: tools ## regenerate the committed gRPC code from proto/
	PATH=$(TOOLS):$$PATH protoc $(call PROTOC_FLAGS,.) $(PROTOS)

.PHONY: proto-check
proto-check: tools ## fail when the committed generated code differs from make proto
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	PATH=$(TOOLS):$$PATH protoc $(call PROTOC_FLAGS,$$tmp) $(PROTOS) || { echo "proto-check: protoc failed"; exit 1; }; \
	for f in $$(cd $$tmp && find . -name '*.go'); do \
		if ! diff -u $$f $$tmp/$$f >/dev/null; then \
			echo "proto-check: $$f differs from make proto output; run make proto"; diff -u $$f $$tmp/$$f | head -40; exit 1; \
		fi; \
	done; echo "proto-check: generated code is up to date"

# Install layout (see docs/operations.md). Every path honours DESTDIR.
PREFIX         ?= /usr/local
BINDIR         ?= $(PREFIX)/bin
CNI_BIN_DIR    ?= /opt/cni/bin
CNI_CONF_DIR   ?= /etc/mesos/cni/net.d
MESOS_CONF_DIR ?= /etc/mesos/petrel
SYSTEMD_DIR    ?= /etc/systemd/system
RELEASE_ARCHES ?= amd64 arm64
DIST           := $(CURDIR)/dist

.PHONY: install
install: build ## install binaries, the CNI plugin, Mesos/CNI configs and systemd units (PREFIX, DESTDIR)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(CNI_BIN_DIR) $(DESTDIR)$(CNI_CONF_DIR) $(DESTDIR)$(MESOS_CONF_DIR) $(DESTDIR)$(SYSTEMD_DIR)
	install -m 0755 $(BIN)/petreld $(BIN)/petrelctl $(BIN)/petrel-dns $(BIN)/petrel-netmodules $(DESTDIR)$(BINDIR)/
	install -m 0755 $(BIN)/petrel $(DESTDIR)$(CNI_BIN_DIR)/petrel
	install -m 0644 deploy/cni/petrel.conf $(DESTDIR)$(CNI_CONF_DIR)/petrel.conf
	install -m 0644 deploy/mesos/modules.json $(DESTDIR)$(MESOS_CONF_DIR)/modules.json
	sed 's|/usr/local/bin/|$(BINDIR)/|g' deploy/systemd/petreld.service >$(DESTDIR)$(SYSTEMD_DIR)/petreld.service
	sed 's|/usr/local/bin/|$(BINDIR)/|g' deploy/systemd/petrel-dns.service >$(DESTDIR)$(SYSTEMD_DIR)/petrel-dns.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_DIR)/petreld.service $(DESTDIR)$(SYSTEMD_DIR)/petrel-dns.service

.PHONY: release
release: ## static linux/amd64 and linux/arm64 tarballs with SHA-256 sums in dist/
	@rm -rf $(DIST) && mkdir -p $(DIST)
	@set -e; for arch in $(RELEASE_ARCHES); do \
		dir=$(DIST)/petrel-$(VERSION)-linux-$$arch; mkdir -p $$dir; \
		for d in $(MAINS); do \
			name=$$(basename $$d); \
			echo "GOARCH=$$arch go build $$name"; \
			CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$dir/$$name $$d; \
		done; \
		cp -r deploy README.md $$dir/; \
		tar -C $(DIST) -czf $(DIST)/petrel-$(VERSION)-linux-$$arch.tar.gz petrel-$(VERSION)-linux-$$arch; \
		rm -rf $$dir; \
	done
	@cd $(DIST) && sha256sum *.tar.gz > SHA256SUMS && cat SHA256SUMS

.PHONY: clean
clean: ## remove build and test output
	rm -rf $(BIN) $(TESTDIR) $(DIST)
