//go:build unix

package cluster

import (
	"log/slog"
	"os"
	"strings"
)

// migrateReqPath is the sysctl that makes Linux move the connections
// queued on a closing SO_REUSEPORT listener to another one of its group.
var migrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// warnMigrateReq logs, with Config.ReusePort, what a closing worker
// listener loses because of the sysctl at path: nothing when it is on.
func warnMigrateReq(log *slog.Logger, path string) {
	b, err := os.ReadFile(path)
	switch {
	case err != nil:
		log.Warn("net.ipv4.tcp_migrate_req is not available (Linux 5.14 and later): a worker that stops or dies resets the connections queued on its listener, not yet accepted",
			"err", err)
	case strings.TrimSpace(string(b)) == "0":
		log.Warn("net.ipv4.tcp_migrate_req is 0: a worker that stops or dies resets the connections queued on its listener, not yet accepted, instead of moving them to another worker",
			"sysctl", "net.ipv4.tcp_migrate_req", "value", 0, "fix", "sysctl -w net.ipv4.tcp_migrate_req=1")
	}
}
