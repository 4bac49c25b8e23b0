#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what is
# missing (redis-server, redis-cli, Chromium and curl from Debian; npm packages for
# the interop and browser tests and the example page), then vet and the
# race-enabled test suite. Usage: ./scripts/test.sh [extra go test flags]
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
	echo "test.sh: installing ${missing[*]}" >&2
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "test.sh: node and npm are required (Node 20)" >&2
	exit 1
fi
for dir in interop e2e; do
	if [ -f "$dir/package-lock.json" ] && [ ! -d "$dir/node_modules" ]; then
		echo "test.sh: installing the npm packages of $dir/ (the ClusterWS 3.x client, playwright-core)" >&2
		(cd "$dir" && npm ci --no-audit --no-fund)
	fi
done

echo "test.sh: gofmt and go vet" >&2
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "test.sh: gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
echo "test.sh: go test -race ./... (compiling takes a minute or two; then the interop, browser and Redis tests run)" >&2
go test -race -count=1 -timeout 15m "$@" ./...
# The benchmark module (peers as dependencies) has a smoke test of its own.
echo "test.sh: the same suites with WithIdlePoll on (idle sockets parked without a goroutine)" >&2
CLUSTERWS_TEST_IDLEPOLL=1 go test -race -count=1 -timeout 10m "$@" . ./hub/... ./client/... ./internal/wsconn/... ./api/... ./metrics/...
echo "test.sh: the benchmark module's vet and smoke test" >&2
(cd bench && go vet ./... && go test -race -count=1 -timeout 5m ./...)
echo "test.sh: all passed" >&2
