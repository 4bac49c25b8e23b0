//go:build unix

package cluster

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/clusterws/clusterws-go/testutil"
)

// TestPortInUse checks that a master whose Port or BrokerPort is taken,
// typically by another instance, says which field to change and why.
func TestPortInUse(t *testing.T) {
	for _, field := range []string{"Port", "BrokerPort"} {
		t.Run(field, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			cfg := Config{
				Host:   "127.0.0.1",
				Worker: func(*Worker) http.Handler { return nil },
				Logger: slog.New(slog.DiscardHandler),
			}
			takenPort := taken.Addr().(*net.TCPAddr).Port
			if field == "Port" {
				cfg.Port, cfg.BrokerPort = takenPort, testutil.FreePort(t)
			} else {
				cfg.Port, cfg.BrokerPort = testutil.FreePort(t), takenPort
			}
			err = RunContext(context.Background(), cfg)
			if !errors.Is(err, ErrPortInUse) || !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("got %v, want ErrPortInUse wrapping EADDRINUSE", err)
			}
			for _, want := range []string{taken.Addr().String(), "cluster.Config." + field + " ", "another instance"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q does not say %q", err, want)
				}
			}
		})
	}
}
