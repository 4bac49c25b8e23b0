#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what is
# missing (npm packages for the interop tests), then vet and the race-enabled
# test suite. Usage: ./scripts/test.sh [extra go test flags]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "test.sh: node and npm are required (Node 20)" >&2
	exit 1
fi
if [ ! -d interop/node_modules/clusterws-client-js ]; then
	(cd interop && npm ci --no-audit --no-fund)
fi

unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "test.sh: gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
go test -race -count=1 -timeout 15m "$@" ./...
