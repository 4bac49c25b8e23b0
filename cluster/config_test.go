package cluster

import (
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/option"
)

// TestConfig checks every field of Config: its default, a value of the
// user's kept as it is, and each value that is an error naming the field.
func TestConfig(t *testing.T) {
	t.Parallel()
	worker := func(*Worker) http.Handler { return nil }
	broker := func() (hub.Broker, error) { return nil, nil }
	logger := slog.New(slog.DiscardHandler)
	with := func(change func(*Config)) Config {
		c := Config{Worker: worker}
		change(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		bad  []string          // the fields the error names; none when valid
		ok   func(Config) bool // checks the result, when valid
	}{
		{name: "defaults", cfg: Config{Worker: worker}, ok: func(c Config) bool {
			return c.Workers == DefaultWorkers && c.Port == DefaultPort && c.Host == "" &&
				c.BrokerPort == DefaultBrokerPort && !c.RestartOnFail && c.Options == nil &&
				c.Broker == nil && c.ShutdownTimeout == DefaultShutdownTimeout && c.Logger != nil
		}},

		{name: "Workers", cfg: with(func(c *Config) { c.Workers = 3 }), ok: func(c Config) bool { return c.Workers == 3 }},
		{name: "Workers negative", cfg: with(func(c *Config) { c.Workers = -1 }), bad: []string{"Workers"}},

		{name: "Port", cfg: with(func(c *Config) { c.Port = 8080 }), ok: func(c Config) bool { return c.Port == 8080 }},
		{name: "Port 65535", cfg: with(func(c *Config) { c.Port = 65535 }), ok: func(c Config) bool { return c.Port == 65535 }},
		{name: "Port negative", cfg: with(func(c *Config) { c.Port = -1 }), bad: []string{"Port"}},
		{name: "Port over 65535", cfg: with(func(c *Config) { c.Port = 65536 }), bad: []string{"Port"}},

		{name: "Host", cfg: with(func(c *Config) { c.Host = "127.0.0.1" }), ok: func(c Config) bool { return c.Host == "127.0.0.1" }},

		{name: "BrokerPort", cfg: with(func(c *Config) { c.BrokerPort = 9000 }), ok: func(c Config) bool { return c.BrokerPort == 9000 }},
		{name: "BrokerPort negative", cfg: with(func(c *Config) { c.BrokerPort = -1 }), bad: []string{"BrokerPort"}},
		{name: "BrokerPort over 65535", cfg: with(func(c *Config) { c.BrokerPort = 70000 }), bad: []string{"BrokerPort"}},
		{name: "BrokerPort is Port", cfg: with(func(c *Config) { c.Port, c.BrokerPort = 9000, 9000 }), bad: []string{"BrokerPort"}},
		{name: "default BrokerPort is Port", cfg: with(func(c *Config) { c.Port = DefaultBrokerPort }), bad: []string{"BrokerPort"}},
		{name: "BrokerPort unused", cfg: with(func(c *Config) { c.Port, c.BrokerPort, c.Broker = 9000, 9000, broker }),
			ok: func(c Config) bool { return c.Broker != nil && c.Port == 9000 }},

		{name: "RestartOnFail", cfg: with(func(c *Config) { c.RestartOnFail = true }), ok: func(c Config) bool { return c.RestartOnFail }},

		{name: "Options", cfg: with(func(c *Config) { c.Options = []clusterws.Option{clusterws.WithPath("/x")} }),
			ok: func(c Config) bool { return len(c.Options) == 1 }},

		{name: "Worker missing", cfg: Config{}, bad: []string{"Worker"}},

		{name: "ShutdownTimeout", cfg: with(func(c *Config) { c.ShutdownTimeout = time.Second }),
			ok: func(c Config) bool { return c.ShutdownTimeout == time.Second }},
		{name: "ShutdownTimeout negative", cfg: with(func(c *Config) { c.ShutdownTimeout = -time.Second }), bad: []string{"ShutdownTimeout"}},

		{name: "Logger", cfg: with(func(c *Config) { c.Logger = logger }), ok: func(c Config) bool { return c.Logger == logger }},

		{name: "every problem at once", cfg: Config{Workers: -1, Port: 70000, BrokerPort: -2, ShutdownTimeout: -1},
			bad: []string{"Worker ", "Workers", "Port", "BrokerPort", "ShutdownTimeout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.cfg.withDefaults()
			if len(tc.bad) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if !tc.ok(got) {
					t.Errorf("got %+v", got)
				}
				return
			}
			if !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("got %v, want an error wrapping ErrInvalidOption", err)
			}
			for _, field := range tc.bad {
				if !strings.Contains(err.Error(), "cluster: invalid option: "+field) {
					t.Errorf("%q does not name %s", err, field)
				}
			}
		})
	}
}

// TestConfigCopy checks that withDefaults leaves the caller's Config,
// and the backing array of its Options, alone.
func TestConfigCopy(t *testing.T) {
	t.Parallel()
	in := Config{Worker: func(*Worker) http.Handler { return nil }, Options: []clusterws.Option{clusterws.WithPath("/x")}}
	c, err := in.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c.Options[0] = nil
	if in.Logger != nil || in.Workers != 0 || in.Port != 0 || in.Options[0] == nil {
		t.Error("withDefaults modified the caller's Config")
	}
	if err := Run(Config{}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Run with a zero Config: %v", err)
	}
}

// TestReusePortOS checks that ReusePort is refused off Linux, naming the
// field, and accepted on Linux.
func TestReusePortOS(t *testing.T) {
	t.Parallel()
	for _, goos := range []string{"darwin", "freebsd", "windows"} {
		ch := option.NewCheck(ErrInvalidOption)
		checkReusePort(ch, true, goos)
		err := ch.Err()
		if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "ReusePort") || !strings.Contains(err.Error(), goos) {
			t.Errorf("%s: %v, want ErrInvalidOption naming ReusePort and %s", goos, err, goos)
		}
		ch = option.NewCheck(ErrInvalidOption)
		checkReusePort(ch, false, goos)
		if err := ch.Err(); err != nil {
			t.Errorf("%s without ReusePort: %v", goos, err)
		}
	}
	ch := option.NewCheck(ErrInvalidOption)
	checkReusePort(ch, true, "linux")
	if err := ch.Err(); err != nil {
		t.Errorf("linux: %v", err)
	}
	cfg := Config{Worker: func(*Worker) http.Handler { return nil }, ReusePort: true}
	if _, err := cfg.withDefaults(); (err == nil) != (runtime.GOOS == "linux") {
		t.Errorf("ReusePort on %s: %v", runtime.GOOS, err)
	}
}
