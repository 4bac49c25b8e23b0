package redisbroker

import (
	"context"
	"maps"
	"slices"
)

// Slot exposes the hash slot function to the external tests, which check
// it against a real cluster's CLUSTER KEYSLOT.
var Slot = slot

// OptionsOf returns the Options b runs with, defaults filled in.
func OptionsOf(b *Broker) Options { return b.opts }

// Shards returns the master addresses of b's shards, sorted; "" is the
// single connection, or on a cluster the shard finding channels' masters.
func Shards(b *Broker) []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return slices.Sorted(maps.Keys(b.shards))
}

// GoRedisLine logs line through go-redis's logger as a call of b would,
// and then as go-redis's own goroutines do.
func GoRedisLine(b *Broker, line string) {
	goRedisLog{}.Printf(b.ctx, "redis: %s", line)
	goRedisLog{}.Printf(context.Background(), "redis: %s", line+" (dropped)")
}

var DroppedSince = droppedSince

// Kill stops b as a killed process stops: its presence lease is no longer
// renewed and its members stay in Redis until the lease lapses. The
// publishes it queued still go out, and its connections close.
func Kill(b *Broker) {
	p := &b.presence
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	_ = b.Close()
}
