package localbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/localbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

// probe runs one Probe with a short deadline.
func probe(b *localbroker.Broker) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return b.Probe(ctx)
}

// TestProbe: a Probe comes back while the Server routes, fails while it is
// gone and comes back after it returns; the counters follow.
func TestProbe(t *testing.T) {
	testutil.CheckGoroutines(t)
	f := newFixture(t, localbroker.ServerOptions{})
	b, _ := newBroker(t, f.addr(), localbroker.Options{ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
	if err := b.Start(func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	testutil.Eventually(t, waitLong, func() bool { return probe(b) == nil }, "the probe never came back")
	if st := f.srv.Stats(); st.Links != 1 {
		t.Fatalf("Server.Stats().Links = %d, want 1", st.Links)
	}
	if st := b.BrokerStats(); st.Kind != "tcp" || !st.Up {
		t.Fatalf("BrokerStats = %+v, want tcp and up", st)
	}

	_ = f.srv.Close()
	testutil.Eventually(t, waitLong, func() bool { return probe(b) != nil }, "the probe still succeeds without a server")
	f.start()
	testutil.Eventually(t, waitLong, func() bool { return probe(b) == nil }, "the probe did not come back after the server returned")
	if st := b.BrokerStats(); st.Reconnects < 1 || st.Errors < 1 {
		t.Fatalf("BrokerStats = %+v, want a lost link and a reconnect", st)
	}
}
