package redisbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/redisbroker"
	"github.com/clusterws/clusterws-go/testutil"
)

// TestProbe: against a real redis-server, a Probe comes back on the
// Broker's own subscription, fails while Redis is down, and comes back
// once Redis is up again.
func TestProbe(t *testing.T) {
	r := testutil.StartRedis(t)
	b := newBroker(t, newClient(t, r.Addr()), redisbroker.Options{})
	if err := b.Start(func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	probe := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return b.Probe(ctx)
	}
	const wait = 30 * time.Second
	testutil.Eventually(t, wait, func() bool { return probe() == nil }, "the probe never came back")
	// The echo may come back before the pipeline's answer is counted.
	testutil.Eventually(t, wait, func() bool {
		st := b.BrokerStats()
		return st.Kind == "redis" && st.Up && st.Published > 0 && st.PublishLatency.Count > 0
	}, "BrokerStats = %+v, want redis, up, the probe published and its latency observed", b.BrokerStats())
	r.Stop()
	testutil.Eventually(t, wait, func() bool { return probe() != nil }, "the probe still succeeds with Redis down")
	r.Start(t)
	testutil.Eventually(t, wait, func() bool { return probe() == nil }, "the probe did not come back after Redis returned")
}
