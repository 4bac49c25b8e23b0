package localbroker

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/internal/backoff"
)

type options interface{ config() (config, error) }

// TestInvalidOptions checks every field's invalid values: the error names
// the field and wraps ErrInvalidOption (and ErrNoSecret for the Secret),
// and New and Listen refuse them.
func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts  options
		field string
	}{
		{Options{}, "Secret"},
		{Options{Secret: "s", PingInterval: -1}, "PingInterval"},
		{Options{Secret: "s", MaxPending: -1}, "MaxPending"},
		{Options{Secret: "s", ReconnectMin: -time.Second}, "ReconnectMin"},
		{Options{Secret: "s", ReconnectMax: -time.Second}, "ReconnectMax"},
		{Options{Secret: "s", ReconnectMin: time.Second, ReconnectMax: time.Millisecond}, "ReconnectMax"},
		{ServerOptions{Addr: "127.0.0.1:0"}, "Secret"},
		{ServerOptions{Secret: "s", PingInterval: -time.Second}, "PingInterval"},
		{ServerOptions{Secret: "s", MaxPending: -1}, "MaxPending"},
	} {
		t.Run(strings.TrimPrefix(fmt.Sprintf("%T", tc.opts), "localbroker.")+"/"+tc.field, func(t *testing.T) {
			t.Parallel()
			_, err := tc.opts.config()
			switch {
			case err == nil:
				t.Fatalf("no error, want one naming %s", tc.field)
			case !errors.Is(err, ErrInvalidOption):
				t.Errorf("%v does not wrap ErrInvalidOption", err)
			case !strings.HasPrefix(err.Error(), "localbroker: ") || !strings.Contains(err.Error(), tc.field):
				t.Errorf("%q does not name %s after the package", err, tc.field)
			case errors.Is(err, ErrNoSecret) != (tc.field == "Secret"):
				t.Errorf("%v: errors.Is(err, ErrNoSecret) = %v", err, errors.Is(err, ErrNoSecret))
			}
			var cerr error
			switch o := tc.opts.(type) {
			case Options:
				_, cerr = New(o)
			case ServerOptions:
				_, cerr = Listen(o)
			}
			if !errors.Is(cerr, ErrInvalidOption) {
				t.Errorf("the constructor returned %v", cerr)
			}
		})
	}
}

// TestOptionDefaults checks what zero means, and that values set are kept.
func TestOptionDefaults(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	reconnect := backoff.Policy{Min: DefaultReconnectMin, Max: DefaultReconnectMax}
	for _, tc := range []struct {
		name string
		opts options
		want config
	}{
		{"server zero", ServerOptions{Secret: "s"}, config{addr: DefaultAddr, pingInterval: DefaultPingInterval, maxPending: DefaultMaxPending, retry: acceptRetry, sweep: historySweep}},
		{"worker zero", Options{Secret: "s"}, config{addr: DefaultAddr, pingInterval: DefaultPingInterval, maxPending: DefaultMaxPending, retry: reconnect}},
		{"server set", ServerOptions{Secret: "s", Addr: ":1", PingInterval: time.Second, MaxPending: 7, Logger: log},
			config{addr: ":1", pingInterval: time.Second, maxPending: 7, retry: acceptRetry, sweep: historySweep}},
		{"worker set", Options{Secret: "s", Addr: ":1", PingInterval: time.Second, MaxPending: 7, ReconnectMin: time.Second, ReconnectMax: time.Minute, Logger: log},
			config{addr: ":1", pingInterval: time.Second, maxPending: 7, retry: backoff.Policy{Min: time.Second, Max: time.Minute}}},
		{"equal bounds", Options{Secret: "s", ReconnectMin: time.Second, ReconnectMax: time.Second},
			config{addr: DefaultAddr, pingInterval: DefaultPingInterval, maxPending: DefaultMaxPending, retry: backoff.Policy{Min: time.Second, Max: time.Second}}},
		{"min alone above the default max", Options{Secret: "s", ReconnectMin: 5 * time.Second},
			config{addr: DefaultAddr, pingInterval: DefaultPingInterval, maxPending: DefaultMaxPending, retry: backoff.Policy{Min: 5 * time.Second, Max: 5 * time.Second}}},
		{"max alone below the default min", Options{Secret: "s", ReconnectMax: 10 * time.Millisecond},
			config{addr: DefaultAddr, pingInterval: DefaultPingInterval, maxPending: DefaultMaxPending, retry: backoff.Policy{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.opts.config()
			if err != nil {
				t.Fatal(err)
			}
			if got.log == nil || got.handshake <= 0 || got.secret != "s" {
				t.Fatalf("config %+v lacks a logger, a handshake timeout or the secret", got)
			}
			got.log, got.handshake, got.secret = nil, 0, ""
			if got != tc.want {
				t.Errorf("config = %+v, want %+v", got, tc.want)
			}
		})
	}
}
