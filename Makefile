# ironlb — `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN        := $(CURDIR)/bin
TOOLS      := $(BIN)/tools
K8S_BIN    := $(BIN)/k8s
GO         ?= go
# Tests that start kube-apiserver and etcd find the binaries here.
export KUBEBUILDER_ASSETS := $(K8S_BIN)

CONTROLLER_GEN := $(TOOLS)/controller-gen
GOLANGCI_LINT  := $(TOOLS)/golangci-lint

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the binaries into bin/.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...
	ln -sf ironlbctl $(BIN)/kubectl-ironlb

$(CONTROLLER_GEN): hack/tools/dev/go.mod
	cd hack/tools/dev && $(GO) build -o $(TOOLS)/ sigs.k8s.io/controller-tools/cmd/controller-gen

$(GOLANGCI_LINT): hack/tools/lint/go.mod
	cd hack/tools/lint && $(GO) build -o $(TOOLS)/ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: deps
deps: ## Install the Debian packages the lab and BPF build need (idempotent; root).
	hack/deps.sh

.PHONY: kube-binaries
kube-binaries: ## Build kube-apiserver, kube-proxy and etcd into bin/k8s (first time only).
	hack/kube-binaries.sh >/dev/null

.PHONY: kubelet-binaries
kubelet-binaries: ## Also build kubelet, kube-controller-manager, kube-scheduler, containerd and the CNI plugins (for the kubelet lab).
	hack/kube-binaries.sh --kubelet >/dev/null

# The BPF objects are committed; they are byte-identical only when built by
# the same clang major version, so generate insists on it.
CLANG_MAJOR := 14
# The multiarch include folder of the build host (asm/types.h for the BPF
# C): x86_64-linux-gnu, aarch64-linux-gnu...
BPF_MULTIARCH ?= $(shell gcc -dumpmachine 2>/dev/null || echo $$(uname -m)-linux-gnu)

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate deepcopy, CRDs, RBAC and the BPF objects.
	$(CONTROLLER_GEN) object paths=./pkg/apis/...
	$(CONTROLLER_GEN) crd:crdVersions=v1 paths=./pkg/apis/... output:crd:dir=manifests/crd
	$(CONTROLLER_GEN) rbac:roleName=ironlb-controller paths=./pkg/controller/... output:rbac:dir=manifests/rbac/controller
	$(CONTROLLER_GEN) rbac:roleName=ironlb-speaker paths=./pkg/speaker/... output:rbac:dir=manifests/rbac/speaker
	rm -rf charts/ironlb/crds charts/ironlb/files/rbac && mkdir -p charts/ironlb/crds charts/ironlb/files/rbac/controller charts/ironlb/files/rbac/speaker
	cp manifests/crd/*.yaml charts/ironlb/crds/
	cp manifests/rbac/controller/role.yaml charts/ironlb/files/rbac/controller/
	cp manifests/rbac/speaker/role.yaml charts/ironlb/files/rbac/speaker/
	@v=$$(clang -dumpversion 2>/dev/null | cut -d. -f1); [[ "$$v" == "$(CLANG_MAJOR)" ]] || { echo "generate: need clang $(CLANG_MAJOR) for reproducible BPF objects, found '$$v' (make deps installs it)"; exit 1; }
	BPF_MULTIARCH=$(BPF_MULTIARCH) $(GO) generate ./bpf/...

.PHONY: verify
verify: deps ## Fail when generated files are stale or code is not gofmt'ed.
	hack/verify.sh

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run gofmt, go vet and golangci-lint.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...

.PHONY: unit
unit: ## Run the unit tests (no API server, no root).
	$(GO) test -race $$($(GO) list ./... | grep -v -e /pkg/controller -e /pkg/apis/ -e /e2e)
	cd hack/tools/images && $(GO) vet ./... && $(GO) test ./...
	cd hack/tools/chart && $(GO) vet ./... && $(GO) test ./...

.PHONY: integration
integration: kube-binaries ## Run the tests against a real kube-apiserver and etcd.
	$(GO) test ./pkg/apis/... ./pkg/controller/...

.PHONY: vm
vm: deps ## Run the tests that need a kernel with VRF (this machine's has none) in a qemu VM with Debian's kernel (fetched by hack/vm-kernel.sh).
	$(GO) test ./e2e/vm -count=1 -timeout 15m

.PHONY: fuzz
# Count-based budgets: a duration -fuzztime makes Go 1.26 fail at the deadline
# with a bare "context deadline exceeded" (golang/go#75804, fixed in Go 1.27).
FUZZ_PARSE_EXECS ?= 300000x
FUZZ_ALLOC_EXECS ?= 50000x
FUZZ_MAGLEV_EXECS ?= 30000x
FUZZ_XDP_EXECS ?= 200000x
FUZZ_TC_EXECS ?= 200000x
FUZZ_XDP_REMOTE_EXECS ?= 100000x
FUZZ_BFD_EXECS ?= 100000x
fuzz: ## Run each fuzz target for a fixed number of executions (about 10 s each).
	$(GO) test ./pkg/ipam -run '^$$' -fuzz '^FuzzParseRange$$' -fuzztime $(FUZZ_PARSE_EXECS) -timeout 5m
	$(GO) test ./pkg/ipam -run '^$$' -fuzz '^FuzzAllocator$$' -fuzztime $(FUZZ_ALLOC_EXECS) -timeout 5m
	$(GO) test ./pkg/maglev -run '^$$' -fuzz '^FuzzBuild$$' -fuzztime $(FUZZ_MAGLEV_EXECS) -timeout 5m
	$(GO) test ./bpf -run '^$$' -fuzz '^FuzzXDP$$' -fuzztime $(FUZZ_XDP_EXECS) -timeout 5m
	$(GO) test ./bpf -run '^$$' -fuzz '^FuzzTC$$' -fuzztime $(FUZZ_TC_EXECS) -timeout 5m
	$(GO) test ./bpf -run '^$$' -fuzz '^FuzzXDPRemote$$' -fuzztime $(FUZZ_XDP_REMOTE_EXECS) -timeout 5m
	$(GO) test ./pkg/bfd -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZ_BFD_EXECS) -timeout 5m

.PHONY: e2e
e2e: deps build kube-binaries ## Run the end-to-end suites in the lab (root): with the XDP data plane, then with --dataplane=kernel (tests that need XDP skip).
	$(GO) test ./e2e -count=1 -v -timeout 15m
	IRONLB_E2E_DATAPLANE=kernel $(GO) test ./e2e -count=1 -v -timeout 15m

.PHONY: e2e-kubelet
e2e-kubelet: deps build kubelet-binaries images ## Run the kubelet lab's suite (root): ironlb installed from manifests/ on real kubelets, dump through the API server, rolling update, node death.
	$(GO) test ./e2e/kubelet -count=1 -v -timeout 20m

.PHONY: test
test: ## Everything CI runs: verify, lint, unit, fuzz, integration, e2e and the kubelet lab's e2e.
	$(MAKE) deps
	$(MAKE) verify
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) fuzz
	$(MAKE) integration
	$(MAKE) vm
	$(MAKE) e2e
	$(MAKE) e2e-kubelet

.PHONY: bench
bench: deps build kube-binaries ## Run the benchmarks: allocator, announcer, Maglev, XDP per packet, data plane at scale, controller load, lab failover, BGP, churn (drain with failover, ring history), SYN flood (cookies), pps and the kubelet lab's figures.
	$(GO) test ./pkg/ipam ./pkg/announce ./pkg/maglev -run '^$$' -bench . -benchmem
	$(GO) test ./bpf -run '^$$' -bench XDP -benchtime 1x
	$(GO) test ./pkg/dataplane/loader -run '^$$' -bench ApplyScale -benchtime 1x
	$(GO) test ./pkg/controller -run '^$$' -bench ControllerLoad -benchtime 1x
	$(BIN)/ironlb-lab up >/dev/null
	$(BIN)/ironlb-lab bench failover --runs $${FAILOVER_RUNS:-20} && $(BIN)/ironlb-lab bench bgp --runs $${BGP_RUNS:-10} && $(BIN)/ironlb-lab bench churn --conns $${CHURN_CONNS:-10000} && $(BIN)/ironlb-lab bench flood --frames $${FLOOD_FRAMES:-1048576}; rc=$$?; $(BIN)/ironlb-lab down; exit $$rc
	$(BIN)/ironlb-lab bench pps --frames $${PPS_FRAMES:-2000000}
	$(MAKE) bench-bgp-restart
	$(MAKE) bench-kubelet

.PHONY: bench-bgp-restart
bench-bgp-restart: deps build kube-binaries ## BGP speaker restart in the e2e lab, XDP then kube-proxy data plane: BIRD's route lost and connections reset, without graceful restart then with it (SIGTERM, kill -9), same run; and a drain's GRACEFUL_SHUTDOWN.
	$(GO) test ./e2e -run '^TestBGPGracefulRestart$$' -count=1 -v -timeout 10m | grep -E 'FIGURE|drain of|^(ok|FAIL|--- FAIL)'
	IRONLB_E2E_DATAPLANE=kernel $(GO) test ./e2e -run '^TestBGPGracefulRestart$$' -count=1 -v -timeout 10m | grep -E 'FIGURE|drain of|^(ok|FAIL|--- FAIL)'

.PHONY: bench-kubelet
bench-kubelet: deps build kubelet-binaries images ## Kubelet lab figures: kubectl apply -k to Ready and to the first VIP answer, speaker rolling update with 50 connections, failover against NotReady on node death, uninstall, helm install.
	$(GO) test ./e2e/kubelet -count=1 -v -timeout 20m | grep -E 'FIGURE|kubectl apply -k began|lab up, ironlb installed|^(ok|FAIL|--- FAIL)'

# The tag the kustomize base (manifests/kustomization.yaml) and the chart's
# appVersion name.
IMAGE_REPO ?= ghcr.io/ironlb
IMAGE_TAG ?= v0.1.0
IMAGES := $(CURDIR)/_output/images

.PHONY: images
images: ## Build the controller and speaker images as tarballs in _output/images without a container daemon (PUSH=1 pushes to IMAGE_REPO).
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' -o $(IMAGES)/bin/ ./cmd/ironlb-controller ./cmd/ironlb-speaker ./cmd/ironlbctl ./cmd/ironlb-lab
	cd hack/tools/images && SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) $(GO) run . --bin $(IMAGES)/bin --out $(IMAGES) \
		--repo $(IMAGE_REPO) --tag $(IMAGE_TAG) --revision $$(git rev-parse HEAD) --lab $(if $(PUSH),--push)

.PHONY: images-docker
images-docker: ## Build the same images from the Dockerfile (docker, podman or buildah).
	hack/images.sh

.PHONY: lab
lab: deps build kube-binaries ## Build everything and bring up the one-machine lab (root).
	$(BIN)/ironlb-lab up

.PHONY: kubelet-lab
kubelet-lab: deps build kubelet-binaries images ## Bring up the lab with a real containerd and kubelet per node and ironlb installed from manifests/ (root).
	$(BIN)/ironlb-lab up --kubelet

.PHONY: clean
clean: ## Remove built binaries (keeps the Kubernetes binaries cache).
	rm -f $(BIN)/ironlb-*
