package localbroker_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/hub/brokertest"
	"github.com/clusterws/clusterws-go/localbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

const secret = "test-secret"

// fixture is a broker Server on a free loopback port that can be restarted
// on the same address.
type fixture struct {
	t    *testing.T
	addr string
	srv  *localbroker.Server
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, addr: "127.0.0.1:0"}
	f.start()
	f.addr = f.srv.Addr().String()
	t.Cleanup(func() { _ = f.srv.Close() })
	return f
}

func (f *fixture) start() {
	f.t.Helper()
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.srv, err = localbroker.Listen(localbroker.ServerOptions{Addr: f.addr, Secret: secret, Logger: testLogger, PingInterval: pingInterval})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the port may linger briefly
	}
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) harness() brokertest.Harness {
	return brokertest.Harness{
		NewBroker: func(t *testing.T) hub.Broker {
			b, err := localbroker.New(localbroker.Options{Addr: f.addr, Secret: secret, Logger: testLogger, PingInterval: pingInterval})
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		Restart: func(t *testing.T) {
			if err := f.srv.Close(); err != nil {
				t.Fatal(err)
			}
			f.start()
		},
	}
}

func TestConformance(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t)
	h := f.harness()
	// Every broker connects before the suite's first subscribe.
	newBroker := h.NewBroker
	h.NewBroker = func(t *testing.T) hub.Broker {
		b := newBroker(t).(*localbroker.Broker)
		t.Cleanup(func() {})
		return connected{b}
	}
	brokertest.Run(t, h)
}

// connected waits for the link in Start, so the suite's first Subscribe
// does not race the dial.
type connected struct{ *localbroker.Broker }

func (c connected) Start(deliver func(string, []byte)) error {
	if err := c.Broker.Start(deliver); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for !c.Connected() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return nil
}

func TestRefusesPeerWithoutSecret(t *testing.T) {
	f := newFixture(t)
	h := f.harness()
	good := brokertest.Start(t, brokertest.Harness{NewBroker: func(t *testing.T) hub.Broker {
		return connected{h.NewBroker(t).(*localbroker.Broker)}
	}})
	if err := good.Subscribe(context.Background(), "secret-channel"); err != nil {
		t.Fatal(err)
	}

	for _, hello := range [][]byte{
		frame('H', append([]byte{1}, "wrong"...)),
		frame('H', []byte{1}),
		frame('S', append([]byte{0, 0, 0, 1, 0, 14}, "secret-channel"...)), // no hello at all
		frame('P', append([]byte{0, 14}, "secret-channel{\"#\":[\"p\",\"x\",1]}"...)),
	} {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(hello)
		// Whatever follows must not reach anyone.
		_, _ = c.Write(frame('P', append([]byte{0, 14}, "secret-channel"+"intruder"...)))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := bufio.NewReader(c).ReadByte(); err == nil {
			t.Errorf("peer without the secret got an answer")
		}
		c.Close()
	}
	// The good link still works and saw nothing from the intruders.
	other := brokertest.Start(t, brokertest.Harness{NewBroker: func(t *testing.T) hub.Broker {
		return connected{h.NewBroker(t).(*localbroker.Broker)}
	}})
	if err := other.Publish(context.Background(), "secret-channel", []byte("legit")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return good.Count("") == 1 }, "legit publish")
	if m := good.Messages(); string(m[0].Frame) != "legit" {
		t.Fatalf("got %q", m[0].Frame)
	}
}

func TestWrongSecretBrokerIsRefused(t *testing.T) {
	f := newFixture(t)
	b, err := localbroker.New(localbroker.Options{Addr: f.addr, Secret: "nope", ReconnectMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	time.Sleep(200 * time.Millisecond) // several dial attempts; none may succeed
	if b.Connected() {
		t.Fatal("a broker with the wrong secret connected")
	}
	if err := b.Publish(context.Background(), "x", []byte("y")); err != localbroker.ErrUnavailable {
		t.Fatalf("Publish = %v, want ErrUnavailable", err)
	}
}

func TestNoSecret(t *testing.T) {
	if _, err := localbroker.Listen(localbroker.ServerOptions{Addr: "127.0.0.1:0"}); !errors.Is(err, localbroker.ErrNoSecret) {
		t.Fatalf("Listen without secret: %v", err)
	}
	if _, err := localbroker.New(localbroker.Options{}); !errors.Is(err, localbroker.ErrNoSecret) {
		t.Fatalf("New without secret: %v", err)
	}
}

func frame(typ byte, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
	return append(append(b, typ), payload...)
}

var testLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
var pingInterval time.Duration // the default: tolerant of a loaded machine
