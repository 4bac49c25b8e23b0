// Package wsc is a minimal WebSocket client for load generation and
// benchmarks: a hand-written HTTP/1.1 upgrade, masked client frames
// written in one syscall per batch, and a frame reader that hands out
// payloads without copying when they fit the read buffer. The bench
// module's load generator, cmd/clusterws-memconn and the hub's benchmarks
// use it to open thousands of connections at little cost on the client
// side.
//
// It does just enough of RFC 6455 to talk to the servers under test, and
// is not a general-purpose client: it sends a fixed Sec-WebSocket-Key and
// does not check the server's Sec-WebSocket-Accept, masks every frame with
// one fixed key, negotiates no extension or subprotocol, and answers a
// server's close frame by returning a *CloseError, not with a close frame.
// Programs and tests that want a real client use package client or
// github.com/coder/websocket.
//
// # Concurrency
//
// A Conn's ReadMessage must be called from one goroutine at a time, which
// also answers the server's pings; WriteRaw and WriteMessage are safe for
// concurrent use, each writing its bytes with one write call.
package wsc
