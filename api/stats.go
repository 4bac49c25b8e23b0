package api

import "github.com/clusterws/clusterws-go/hub"

// StatsResponse is the answer of GET /api/stats. Under cluster.Run,
// Workers has every worker's, by ID, and Total their sum.
type StatsResponse struct {
	Total   Stats            `json:"total"`
	Workers map[string]Stats `json:"workers,omitempty"`
}

// Stats are a Server's counters, as GET /api/stats shows them.
type Stats struct {
	Ready         bool   `json:"ready"`
	Connections   int    `json:"connections"`
	Channels      int    `json:"channels"`
	Subscriptions int    `json:"subscriptions"`
	Accepted      uint64 `json:"accepted"`
	Closed        uint64 `json:"closed"`
	Published     uint64 `json:"published"`
	Delivered     uint64 `json:"delivered"`
	Ignored       uint64 `json:"ignored"`
	Refused       uint64 `json:"refused"`
	SlowConsumers uint64 `json:"slow_consumers"`
	NoPong        uint64 `json:"no_pong"`
	Panics        uint64 `json:"panics"`
	BrokerErrors  uint64 `json:"broker_errors"`
	QueuedBytes   int    `json:"queued_bytes"`
}

// StatsOf converts hub.Metrics.
func StatsOf(m hub.Metrics) Stats {
	return Stats{
		Ready: m.Ready == nil, Connections: m.Connections, Channels: m.Channels, Subscriptions: m.Subscriptions,
		Accepted: m.Accepted, Closed: m.Closed, Published: m.Published, Delivered: m.Delivered,
		Ignored: m.Ignored, Refused: m.Refused, SlowConsumers: m.SlowConsumers, NoPong: m.NoPong,
		Panics: m.Panics, BrokerErrors: m.BrokerErrors, QueuedBytes: m.QueuedBytes,
	}
}

// Add returns the sum of s and o; Ready only if both are. Channels are
// summed too, so a channel with subscribers in two processes counts twice.
func (s Stats) Add(o Stats) Stats {
	return Stats{
		Ready: s.Ready && o.Ready, Connections: s.Connections + o.Connections,
		Channels: s.Channels + o.Channels, Subscriptions: s.Subscriptions + o.Subscriptions,
		Accepted: s.Accepted + o.Accepted, Closed: s.Closed + o.Closed,
		Published: s.Published + o.Published, Delivered: s.Delivered + o.Delivered,
		Ignored: s.Ignored + o.Ignored, Refused: s.Refused + o.Refused,
		SlowConsumers: s.SlowConsumers + o.SlowConsumers, NoPong: s.NoPong + o.NoPong,
		Panics: s.Panics + o.Panics, BrokerErrors: s.BrokerErrors + o.BrokerErrors,
		QueuedBytes: s.QueuedBytes + o.QueuedBytes,
	}
}
