#!/usr/bin/env bash
# Runs the side-by-side benchmark (issue 6): builds the load generator, the
# runner and the Go servers, installs the Node ClusterWS peer if needed, and
# runs every workload against every system, interleaved, 3 trials.
#
#   bench/run.sh                       # full run, ~1 h on 2 cores; results in bench/results/
#   bench/run.sh -quick -trials 1      # end-to-end check in ~2 min
#   bench/run.sh -workloads w2 -systems ours,centrifuge
#
# Extra arguments go to bench/cmd/runner (see its -h). Needs Go, npm and
# redis-server/redis-benchmark (Debian: redis-server, redis-tools). Every
# server runs on free loopback ports and is stopped by the PIDs the runner
# started.
set -euo pipefail
cd "$(dirname "$0")"

for tool in redis-server redis-benchmark; do
	if ! command -v "$tool" >/dev/null; then
		echo "run.sh: $tool is missing (apt-get install redis-server redis-tools)" >&2
		exit 1
	fi
done
if [ ! -x peers/clusterws-node/node_modules/.bin/node ]; then
	(cd peers/clusterws-node && npm ci --no-audit --no-fund)
fi
go build -o bin/ ./cmd/...
mkdir -p results
stamp=$(date +%Y%m%d-%H%M%S)
bin/runner -bin bin -node-dir peers/clusterws-node \
	-out "results/results-$stamp.md" -json "results/results-$stamp.json" -log-dir "results/logs-$stamp" "$@"
echo "run.sh: wrote bench/results/results-$stamp.md" >&2
