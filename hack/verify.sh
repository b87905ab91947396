#!/usr/bin/env bash
# Fails when a generated file is stale: regenerates everything and checks that
# git sees no difference; also checks gofmt and go.mod tidiness.
set -euo pipefail
cd "$(dirname "$0")/.."

make --no-print-directory generate >/dev/null
go mod tidy
for d in hack/tools/*/; do (cd "$d" && go mod tidy); done
bad=$(gofmt -l $(git ls-files '*.go') || true)
if [[ -n "$bad" ]]; then
	echo "gofmt needed:"; echo "$bad"; exit 1
fi
if ! git diff --quiet --exit-code -- . ; then
	echo "generated files or go.mod are stale; run 'make generate' and 'go mod tidy' and commit:"
	git diff --stat
	exit 1
fi
untracked=$(git ls-files --others --exclude-standard -- manifests pkg/apis bpf charts)
if [[ -n "$untracked" ]]; then
	echo "generated files not in git:"; echo "$untracked"
	exit 1
fi
echo "verify: generated files are up to date"
