// Package client is a Go client of the ClusterWS 3.x wire protocol, the one
// the clusterws server and the JavaScript clusterws-client-js speak: events
// in both directions, channel subscribe/publish, heartbeats answered, and
// optional reconnection that subscribes the channels again.
//
//	c, err := client.Dial(ctx, "ws://localhost:8080/ws", client.Options{AutoReconnect: true})
//	c.On("chat", func(data json.RawMessage) { ... })
//	news, err := c.Subscribe(ctx, "news")
//	news.Watch(func(data json.RawMessage) { ... })
//	err = news.Publish(ctx, map[string]any{"title": "hi"})
//	err = c.Send(ctx, "chat", "hello")
//	c.Close()
//
// Dial returns once the server's config frame has arrived. Use New, register
// handlers, then Connect when no frame sent right after connecting may be
// missed.
//
// # Concurrency
//
// Every method of Client and Channel is safe for concurrent use. Handlers
// (On, Watch, OnConnect, OnDisconnect) run one at a time on the client's
// handler goroutine, in the order the frames arrived, across reconnects
// too. Handlers may call Send, Publish, Subscribe and Unsubscribe, but not
// Close, which waits for the handler goroutine to finish (call
// go c.Close() instead). Handlers should not block for long: frames queue
// behind a running one, and once 256 wait the client stops reading, so
// that a heartbeat not read in time makes it drop the connection as if the
// server were dead.
//
// One goroutine owns a connected client's connection: it reads, answers
// heartbeats and queues frames for the handlers, and with
// Options.AutoReconnect it also reconnects, with jittered exponential
// backoff, and subscribes the channels again. A watchdog goroutine per
// connection implements dead-server detection: no heartbeat within
// 2×ping+100ms (ping is the interval the server announces) closes the
// connection with hub.CloseNoPong. Close stops all three and waits for
// them.
//
// # Delivery
//
// Send and Publish write to the current connection or fail with
// ErrNotConnected; nothing is queued across reconnects, and publishes made
// while the client was disconnected are not replayed (at-most-once).
// Subscribe while disconnected records the channel and subscribes it on the
// next connection.
package client
