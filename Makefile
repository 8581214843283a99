# CISS — see README.md. Every target runs from a fresh clone: tools the tests
# need are built by the project itself and cached in $(CISS_CACHE), keyed by version.
SHELL       := /bin/bash
GO          ?= go
export CISS_CACHE ?= $(HOME)/.cache/ciss
BIN         := $(CURDIR)/bin
MODULES     := schemas gateway dispatcher workers test
PKGS        := $(foreach m,$(MODULES),ciss.dev/$(m)/...)
UNIT_PKGS   := $(filter-out ciss.dev/test/...,$(PKGS)) ciss.dev/test/fixture/... ciss.dev/test/stack/... ciss.dev/test/vaultdev/...
TRIVY        = $(shell deploy/tools/install-trivy.sh)
COSIGN       = $(shell deploy/tools/install-cosign.sh)
GOSEC        = $(shell deploy/tools/install-gosec.sh)
VAULT        = $(shell deploy/tools/install-vault.sh)
# Packages the gateway and dispatcher must never link (dependency isolation).
FORBIDDEN   := github.com/aquasecurity/|github.com/sigstore/|github.com/tektoncd/|github.com/hashicorp/vault|github.com/nats-io/nats-server

.PHONY: all build run test verify fmt vet depcheck gowork-off helm-check integrations-check unit e2e k8s bench trivy vault fuzz clean

all: build

build: ## the component binaries, the ciss client and the dev launcher, into bin/
	$(GO) build -o $(BIN)/ ciss.dev/gateway/cmd/ciss-gateway ciss.dev/dispatcher/cmd/ciss-dispatcher \
		ciss.dev/workers/cmd/ciss-worker ciss.dev/test/cmd/ciss-dev ciss.dev/gateway/cmd/ciss

trivy: ## the pinned Trivy CLI, built once into $(CISS_CACHE)
	@deploy/tools/install-trivy.sh

vault: ## the pinned Vault server (protected-action tests), built once into $(CISS_CACHE)
	@deploy/tools/install-vault.sh

run: build ## the whole stack on loopback, in the foreground; Ctrl-C stops it
	@trivy=$$(deploy/tools/install-trivy.sh) && vault=$$(deploy/tools/install-vault.sh) && gosec=$$(deploy/tools/install-gosec.sh) && $(BIN)/ciss-dev -trivy "$$trivy" -vault "$$vault" -gosec "$$gosec" $(CISS_DEV_ARGS)

test: verify unit e2e k8s ## everything CI runs

verify: fmt vet depcheck gowork-off helm-check integrations-check ## static checks, wire-format drift, deployment artefacts

fmt:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags k8s ciss.dev/test/k8s/... ciss.dev/test/e2e/...

depcheck: ## schemas is stdlib-only; gateway and dispatcher never link scanners, signers, Tekton, Vault
	@set -e; \
	bad=$$(cd schemas && GOWORK=off $(GO) list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./... | grep -v '^ciss.dev/schemas' || true); \
	if [ -n "$$bad" ]; then echo "schemas must be stdlib-only, links:"; echo "$$bad"; exit 1; fi; \
	for m in gateway dispatcher; do \
	  bad=$$(cd $$m && GOWORK=off $(GO) list -deps ./... | grep -E '^($(FORBIDDEN))' || true); \
	  if [ -n "$$bad" ]; then echo "$$m links forbidden packages:"; echo "$$bad" | head; exit 1; fi; \
	done; echo "depcheck: ok"

gowork-off: ## each module builds on its own, through its replace of ../schemas
	@set -e; for m in $(MODULES); do (cd $$m && GOWORK=off $(GO) build ./... && GOWORK=off $(GO) vet ./... >/dev/null); done; echo "gowork-off: ok"

helm-check: ## deploy/helm/ciss: helm lint, helm template + kubeconform (Kubernetes schemas), PodSecurity/RBAC/Tekton checks (test/lint)
	@deploy/tools/helm-check.sh

integrations-check: ## deploy/integrations: action.yml and the GitLab template through GitHub's and GitLab's own validators
	@deploy/tools/lint-integrations.sh

unit: ## unit and component tests, on real embedded NATS, registries and Trivy
	CISS_TRIVY="$(TRIVY)" CISS_COSIGN="$(COSIGN)" CISS_VAULT="$(VAULT)" CISS_GOSEC="$(GOSEC)" $(GO) test -race -count=1 -timeout 20m $(UNIT_PKGS)

e2e: build ## end-to-end tests against the real stack (binaries as processes; their logs print on failure)
	CISS_TRIVY="$(TRIVY)" CISS_COSIGN="$(COSIGN)" CISS_VAULT="$(VAULT)" CISS_GOSEC="$(GOSEC)" CISS_BIN_DIR="$(BIN)" $(GO) test -count=1 -timeout 30m -v ciss.dev/test/e2e/...

k8s: build ## cluster backend on a real Kubernetes + Tekton on loopback (test/k8s; root; cold install ~11 min)
	test/k8s/cluster.sh install
	CISS_TRIVY="$(TRIVY)" CISS_BIN_DIR="$(BIN)" $(GO) test -tags k8s -count=1 -timeout 30m -v \
		-run '^(TestClusterRunsTaskRun|TestBackendConformance|TestClusterBackend)$$' ciss.dev/test/k8s/... ciss.dev/test/e2e/...

fuzz: ## a short run of every fuzz target
	@set -e; for p in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$p 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 15s $$p; done; done

bench: build ## Go benchmarks plus load runs; figures as ratios to baselines measured in the same run
	CISS_TRIVY="$(TRIVY)" $(GO) test -run '^$$' -bench . -benchtime 2s -count 1 $(filter-out ciss.dev/test/...,$(PKGS))
	CISS_TRIVY="$(TRIVY)" CISS_BIN_DIR="$(BIN)" $(GO) run ciss.dev/test/cmd/ciss-load

clean:
	rm -rf $(BIN) .ciss
