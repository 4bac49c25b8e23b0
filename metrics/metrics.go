package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clusterws/clusterws-go/hub"
)

// Source is what a Collector reads: *clusterws.Server and *hub.Hub are
// Sources.
type Source interface {
	Metrics() hub.Metrics
}

// Collector is a prometheus.Collector of one Server's metrics (see the
// package documentation for the list). It reads hub.Metrics once per
// scrape. It is safe for concurrent use.
type Collector struct {
	src Source
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector of src's metrics, to register in a
// prometheus.Registry.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

// Handler serves the Prometheus exposition of src's metrics and of the Go
// runtime and process collectors, from a registry of its own, in the
// format the scraper asks for (text by default).
func Handler(src Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("clusterws_"+name, help, labels, nil)
}

var (
	dConnections    = desc("connections", "Sockets open now.")
	dConnects       = desc("connects_total", "Sockets accepted.")
	dDisconnects    = desc("disconnects_total", "Sockets closed, by close code (\"other\" for codes not counted one by one).", "code")
	dSubscriptions  = desc("subscriptions", "Socket-channel subscriptions.")
	dChannels       = desc("channels", "Channels with a local subscriber or watcher.")
	dMessagesIn     = desc("messages_received_total", "Client messages received, by kind.", "kind")
	dIgnored        = desc("ignored_messages_total", "Client messages ignored, by reason.", "reason")
	dRefused        = desc("refused_requests_total", "Subscriptions and publishes refused, by reason.", "reason")
	dPublishes      = desc("publishes_total", "Publishes fanned out in this process, local or from the broker.")
	dDeliveries     = desc("deliveries_total", "Frames queued to subscribers by publishes.")
	dSlow           = desc("slow_consumer_closes_total", "Sockets closed because their send queue overflowed.")
	dNoPong         = desc("heartbeat_timeouts_total", "Sockets closed for not answering a heartbeat.")
	dPanics         = desc("handler_panics_total", "Application handler panics recovered.")
	dDeflateSockets = desc("deflate_sockets", "Sockets open now that negotiated permessage-deflate.")
	dCompressions   = desc("compressions_total", "Messages compressed for permessage-deflate: once per publish, however many subscribers get it.")
	dDeflated       = desc("deflated_frames_total", "Frames sent compressed (permessage-deflate).")
	dQueued         = desc("send_queue_bytes", "Bytes waiting in the sockets' send queues.")
	dFanout         = desc("fanout_latency_seconds", "Time from a frame queued for a socket to its write to the connection, per frame.")
	dReady          = desc("ready", "1 while the server accepts sockets and its broker delivers, else 0.")
	dCallErrors     = desc("broker_call_errors_total", "Broker calls of the hub that failed.")
	dBrokerUp       = desc("broker_up", "1 while the broker link is up, else 0.", "broker")
	dBrokerPub      = desc("broker_published_total", "Publishes handed to the broker's backend.", "broker")
	dBrokerRecv     = desc("broker_received_total", "Publishes from other processes delivered here by the broker.", "broker")
	dBrokerErrors   = desc("broker_errors_total", "Publishes refused or lost and links broken, as the broker counts them.", "broker")
	dBrokerReconn   = desc("broker_reconnects_total", "Broker links re-established after a loss.", "broker")
	dBrokerLatency  = desc("broker_publish_latency_seconds", "Time from a publish handed to the broker to its write to the link (tcp) or acknowledgement (redis).", "broker")
	dProbeRTT       = desc("broker_probe_rtt_seconds", "Round trip of the last readiness probe through the broker.", "broker")
	dProbeFailures  = desc("broker_probe_failures_total", "Readiness probes through the broker that failed.", "broker")
	allDescriptions = []*prometheus.Desc{
		dConnections, dConnects, dDisconnects, dSubscriptions, dChannels, dMessagesIn, dIgnored, dRefused,
		dPublishes, dDeliveries, dSlow, dNoPong, dPanics, dDeflateSockets, dCompressions, dDeflated, dQueued, dFanout, dReady, dCallErrors,
		dBrokerUp, dBrokerPub, dBrokerRecv, dBrokerErrors, dBrokerReconn, dBrokerLatency, dProbeRTT, dProbeFailures,
	}
)

// Describe sends the descriptions of every metric the Collector may send.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescriptions {
		ch <- d
	}
}

// Collect reads the Source's metrics and sends them.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	m := c.src.Metrics()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(dConnections, float64(m.Connections))
	counter(dConnects, m.Accepted)
	for i, code := range hub.CountedCloseCodes {
		counter(dDisconnects, m.Disconnects[i], strconv.Itoa(int(code)))
	}
	counter(dDisconnects, m.Disconnects[len(hub.CountedCloseCodes)], "other")
	gauge(dSubscriptions, float64(m.Subscriptions))
	gauge(dChannels, float64(m.Channels))
	for i, kind := range hub.MessageKinds {
		counter(dMessagesIn, m.MessagesIn[i], kind)
	}
	for i, reason := range hub.IgnoredReasons {
		counter(dIgnored, m.IgnoredBy[i], reason)
	}
	for i, reason := range hub.RefusedReasons {
		counter(dRefused, m.RefusedBy[i], reason)
	}
	counter(dPublishes, m.Published)
	counter(dDeliveries, m.Delivered)
	counter(dSlow, m.SlowConsumers)
	counter(dNoPong, m.NoPong)
	counter(dPanics, m.Panics)
	gauge(dDeflateSockets, float64(m.DeflateSockets))
	counter(dCompressions, m.Compressed)
	counter(dDeflated, m.Deflated)
	gauge(dQueued, float64(m.QueuedBytes))
	ch <- histogram(dFanout, m.FanoutLatency)
	gauge(dReady, boolValue(m.Ready == nil))
	counter(dCallErrors, m.BrokerErrors)
	if b := m.Broker; b != nil {
		gauge(dBrokerUp, boolValue(b.Up), b.Kind)
		counter(dBrokerPub, b.Published, b.Kind)
		counter(dBrokerRecv, b.Received, b.Kind)
		counter(dBrokerErrors, b.Errors, b.Kind)
		counter(dBrokerReconn, b.Reconnects, b.Kind)
		ch <- histogram(dBrokerLatency, b.PublishLatency, b.Kind)
		if !m.Probe.At.IsZero() {
			gauge(dProbeRTT, m.Probe.RTT.Seconds(), b.Kind)
			counter(dProbeFailures, m.Probe.Failures, b.Kind)
		}
	}
}

// histogram converts a hub histogram, whose buckets are not cumulative,
// to a Prometheus one, whose are.
func histogram(d *prometheus.Desc, s hub.HistogramSnapshot, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(hub.LatencyBuckets))
	var cum uint64
	for i, le := range hub.LatencyBuckets {
		cum += s.Counts[i]
		buckets[le.Seconds()] = cum
	}
	count := cum + s.Counts[len(hub.LatencyBuckets)]
	return prometheus.MustNewConstHistogram(d, count, s.Sum.Seconds(), buckets, labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
