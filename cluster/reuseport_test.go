//go:build unix

package cluster

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWarnMigrateReq checks the master's warning about
// net.ipv4.tcp_migrate_req with ReusePort: on 0 or when the kernel lacks
// it, not on 1.
func TestWarnMigrateReq(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string // content "": no such file
		want          string
	}{
		{"off", "0\n", "net.ipv4.tcp_migrate_req is 0: a worker that stops or dies resets the connections queued on its listener"},
		{"on", "1\n", ""},
		{"missing", "", "net.ipv4.tcp_migrate_req is not available"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil)).With("component", "cluster")
			warnMigrateReq(log, path)
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			switch {
			case tc.want == "" && buf.Len() != 0:
				t.Errorf("logged %q, want nothing", buf.String())
			case tc.want != "" && (len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") ||
				!strings.Contains(lines[0], tc.want) || !strings.Contains(lines[0], "component=cluster")):
				t.Errorf("logged %q, want one warning saying %q", buf.String(), tc.want)
			}
		})
	}
}
