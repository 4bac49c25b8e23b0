package cluster

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	worker := func(*Worker) http.Handler { return nil }
	in := Config{Worker: worker}
	c, err := in.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers != 1 || c.Port != 80 || c.BrokerPort != 9346 || c.ShutdownTimeout != 10*time.Second || c.Logger == nil || c.Host != "" {
		t.Errorf("defaults: %+v", c)
	}
	if in.Logger != nil || in.Workers != 0 {
		t.Error("withDefaults modified the caller's Config")
	}

	for name, bad := range map[string]Config{
		"no worker":        {},
		"negative workers": {Worker: worker, Workers: -1},
		"port":             {Worker: worker, Port: 70000},
		"broker port":      {Worker: worker, BrokerPort: -1},
		"same ports":       {Worker: worker, Port: 9000, BrokerPort: 9000},
		"timeout":          {Worker: worker, ShutdownTimeout: -time.Second},
	} {
		if _, err := bad.withDefaults(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: got %v, want ErrInvalidConfig", name, err)
		}
	}
	if err := Run(Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Run with a zero Config: %v", err)
	}
}
