#!/usr/bin/env bash
# Runs the side-by-side benchmark (issue 6): builds the load generator, the
# runner and the Go servers, installs the Node ClusterWS peer if needed, and
# runs every workload against every system, interleaved, 3 trials.
#
#   bench/run.sh                       # full run, ~1 h on 2 cores; results in bench/results/
#   bench/run.sh -quick -trials 1      # end-to-end check in ~2 min
#   bench/run.sh -workloads w2 -systems ours,centrifuge
#
# W8, 100,000 subscribed connections (issue 16; ~4 min per system here,
# Centrifuge at 19,000, all one process can open):
#
#   bench/run.sh -systems ours,centrifuge -workloads w8 -trials 1 -timeout 10m
#
# Ours before / after: build the baseline's ourserver from its tree and run
# it as system ours-base; -ratios puts after / before in the report:
#
#   (cd /path/to/base-tree/bench && go build -o /tmp/ourserver-base ./cmd/ourserver)
#   bench/run.sh -systems ours,ours-base -ours-base-bin /tmp/ourserver-base \
#       -ratios ours/ours-base -workloads w2,w4 -w2-subs 1000 -w2-search=false
#
# A feature's cost: ours-presence and ours-history are ours with presence,
# or history (100 publications), on every channel:
#
#   bench/run.sh -systems ours,ours-presence,ours-history \
#       -ratios ours-presence/ours,ours-history/ours -workloads w2 -w2-subs 1000 -w2-search=false
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
# The Node peer is installed only when it will run: every system by
# default, or a -systems list that names it.
systems=all
prev=
for arg in "$@"; do
	case "$prev" in -systems | --systems) systems=$arg ;; esac
	case "$arg" in -systems=* | --systems=*) systems=${arg#*=} ;; esac
	prev=$arg
done
case "$systems" in
all | *clusterws-node*)
	if [ ! -x peers/clusterws-node/node_modules/.bin/node ]; then
		(cd peers/clusterws-node && npm ci --no-audit --no-fund)
	fi
	;;
esac
go build -o bin/ ./cmd/...
mkdir -p results
stamp=$(date +%Y%m%d-%H%M%S)
bin/runner -bin bin -node-dir peers/clusterws-node \
	-out "results/results-$stamp.md" -json "results/results-$stamp.json" -log-dir "results/logs-$stamp" "$@"
echo "run.sh: wrote bench/results/results-$stamp.md" >&2
