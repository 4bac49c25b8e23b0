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
// Every method of Client and Channel is safe for concurrent use. Each
// connection has one reader goroutine, which answers heartbeats and runs
// every handler (On, Watch, OnConnect, OnDisconnect) in the order the frames
// arrived. Handlers must not block for long: while one runs nothing else is
// read, and a heartbeat not read in time makes the client drop the
// connection as if the server were dead. Handlers may call Send, Publish,
// Subscribe and Unsubscribe, but not Close, which waits for the reader
// goroutine to finish (call go c.Close() instead).
//
// One goroutine owns a connected client's connection: it is the reader, and
// with Options.AutoReconnect it also reconnects, with jittered exponential
// backoff, and subscribes the channels again. A watchdog goroutine per
// connection implements dead-server detection: no heartbeat within
// 2×ping+100ms (ping is the interval the server announces) closes the
// connection with hub.CloseNoPong. Close stops both and waits for them.
//
// # Delivery
//
// Send and Publish write to the current connection or fail with
// ErrNotConnected; nothing is queued across reconnects, and publishes made
// while the client was disconnected are not replayed (at-most-once).
// Subscribe while disconnected records the channel and subscribes it on the
// next connection.
package client
