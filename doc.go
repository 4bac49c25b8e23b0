// Package clusterws is a real-time WebSocket framework that speaks the
// ClusterWS protocol: event-style sockets, channel pub/sub, and a pluggable
// broker that carries publishes between worker processes and hosts.
//
// A Server is net/http middleware: Middleware upgrades the configured path
// (default "/ws") and passes every other request through, so it mounts in
// chi (r.Use(srv.Middleware)) or any mux. Package cluster runs N worker
// processes on one port with the built-in TCP broker; package redisbroker
// links hosts through Redis.
//
// See the examples and README.md for a quick start.
package clusterws
