// Package metrics exports a clusterws Server's counters to Prometheus,
// with github.com/prometheus/client_golang. It is a separate package so
// that programs that do not import it pay nothing for it: the hub only
// keeps atomic counters and fixed-bucket histograms (hub.Metrics), and the
// Collector reads them when Prometheus scrapes.
//
//	mux.Handle("/metrics", metrics.Handler(srv))  // the Server, Go runtime and process
//	// or, into a registry of your own:
//	reg.MustRegister(metrics.NewCollector(srv))
//
// Under cluster.Run, the master serves every worker's metrics on its admin
// listener (cluster.Config.AdminAddr), each series labelled worker="N".
//
// # Metrics
//
// Counters end in _total, durations are in seconds and sizes in bytes.
// Labels take a bounded set of values: never a channel, a user or a
// socket.
//
//	clusterws_connections                       gauge      sockets open now
//	clusterws_connects_total                    counter    sockets accepted
//	clusterws_disconnects_total{code}           counter    sockets closed, by close code ("other" for codes not in hub.CountedCloseCodes)
//	clusterws_subscriptions                     gauge      socket-channel subscriptions
//	clusterws_channels                          gauge      channels with a local subscriber or watcher
//	clusterws_messages_received_total{kind}     counter    client messages: event, publish, subscribe, unsubscribe, pong
//	clusterws_ignored_messages_total{reason}    counter    client messages ignored: malformed, unknown_kind, reserved_event, not_subscribed
//	clusterws_refused_requests_total{reason}    counter    subscriptions and publishes refused: application, channel_too_long, too_many_subscriptions, reserved_channel
//	clusterws_publishes_total                   counter    publishes fanned out in this process, local or from the broker
//	clusterws_deliveries_total                  counter    frames queued to subscribers by those publishes
//	clusterws_slow_consumer_closes_total        counter    sockets closed because their send queue overflowed (4002)
//	clusterws_heartbeat_timeouts_total          counter    sockets closed for not answering a heartbeat (4001)
//	clusterws_handler_panics_total              counter    application handler panics recovered
//	clusterws_send_queue_bytes                  gauge      bytes waiting in the sockets' send queues
//	clusterws_fanout_latency_seconds            histogram  from a frame queued for a socket to its write, per frame
//	clusterws_ready                             gauge      1 while the Server is ready (Server.Ready), else 0
//	clusterws_broker_call_errors_total          counter    Broker calls of the hub that failed
//	clusterws_broker_up{broker}                 gauge      1 while the broker link is up
//	clusterws_broker_published_total{broker}    counter    publishes handed to the broker's backend
//	clusterws_broker_received_total{broker}     counter    publishes from other processes delivered here
//	clusterws_broker_errors_total{broker}       counter    publishes refused or lost and links broken, as the broker counts them
//	clusterws_broker_reconnects_total{broker}   counter    broker links re-established
//	clusterws_broker_publish_latency_seconds{broker}  histogram  from Publish to written to the link (tcp) or acknowledged (redis)
//	clusterws_broker_probe_rtt_seconds{broker}  gauge      round trip of the last readiness probe through the broker
//	clusterws_broker_probe_failures_total{broker}  counter readiness probes that failed
//
// broker is "tcp" (localbroker) or "redis" (redisbroker). Handler adds the
// client_golang Go runtime (go_*) and process (process_*) collectors.
package metrics
