//go:build unix

package cluster

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/testutil"
)

// TestAdminAddrLoopback: an AdminAddr without a host (":9100" in the docs,
// ":0" here) listens on loopback only: the admin listener answers on
// 127.0.0.1 and refuses connections to the host's other addresses.
func TestAdminAddrLoopback(t *testing.T) {
	if got := adminAddr(":9100"); got != "127.0.0.1:9100" {
		t.Fatalf("adminAddr(\":9100\") = %q", got)
	}
	var logs testutil.SyncBuffer
	a, err := startAdmin(Config{AdminAddr: ":0"}, slog.New(slog.NewJSONHandler(&logs, nil)), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	// The port the kernel chose is in the start-up record.
	var addr string
	for line := range strings.Lines(logs.String()) {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "admin listener is running" {
			addr = rec.Addr
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("admin listener on %q, want 127.0.0.1 (log: %s)", addr, logs.String())
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %s", resp.Status)
	}

	// Every other address of the host: its interfaces', and on Linux
	// another of 127/8, which is local without being 127.0.0.1.
	var others []string
	if runtime.GOOS == "linux" {
		others = append(others, "127.0.0.2")
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ia := range ifaddrs {
		if n, ok := ia.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			others = append(others, n.IP.String())
		}
	}
	if len(others) == 0 {
		t.Skip("the host has no address besides 127.0.0.1 to try")
	}
	for _, ip := range others {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, port), 10*time.Second)
		if err == nil {
			c.Close()
			t.Errorf("the admin listener accepted a connection on %s", ip)
		}
	}
}
