// Package client is a Go client of the ClusterWS 3.x wire protocol, the one
// the clusterws server and the JavaScript clusterws-client-js speak: events
// in both directions, channel subscribe/publish, heartbeats answered, and
// optional reconnection that subscribes the channels again. With a server
// that speaks the protocol extension, as the clusterws server does, the
// client also learns whether its subscribes and publishes were accepted.
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
// (On, Watch, OnConnect, OnDisconnect, OnError) run one at a time on the client's
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
// # Protocol extension
//
// The client offers the WebSocket subprotocol clusterws.v2 on every
// handshake (except with Options.Legacy). When the server selects it
// (Config.Extension), each subscribe, unsubscribe and publish carries an
// id, counting up from 1 on each connection, and the server answers it, ok
// or with a code and reason. Subscribe, Unsubscribe and
// Publish then wait for that answer, bounded by their ctx, and return a
// refusal as the server's *hub.ReplyError; match it with errors.Is against
// hub.ErrRefused (the OnSubscribe or OnPublish hook said no; Reason is its
// error text), hub.ErrChannelTooLong, hub.ErrTooManyChannels,
// hub.ErrNotSubscribed, hub.ErrBrokerUnavailable, or read its Code with
// errors.As:
//
//	_, err := c.Subscribe(ctx, "room:vip")
//	if errors.Is(err, hub.ErrRefused) { ... }
//
// A refused channel is not kept. After a reconnect the client subscribes
// its channels again, also waiting for answers; one the server refuses
// then is dropped and reported to OnError as a *ChannelError. Requests
// waiting for an answer when the connection ends fail with ErrNotConnected
// (ErrClosed after Close); none waits forever. Answers with unknown ids and
// system frames the client does not know are ignored.
//
// Servers that do not speak the extension, such as the Node.js ClusterWS
// server, get the 3.x frames, and Subscribe, Unsubscribe and Publish
// return once their frame is written. The client needs both the selected
// subprotocol and the config frame's "protocol":"clusterws.v2": the Node.js
// servers select whatever a client offers without speaking it.
//
// # Delivery
//
// Send and Publish write to the current connection or fail with
// ErrNotConnected; nothing is queued across reconnects, and publishes made
// while the client was disconnected are not replayed (at-most-once).
// Subscribe while disconnected records the channel and subscribes it on the
// next connection. After a reconnect, the channels are subscribed again
// before any publish or event goes out on the new connection. Without
// Options.Recover, the publications made on a channel while the client was
// away are missed.
//
// # History and recovery
//
// On a channel with history (the server's WithHistory), every publication
// carries its position: an offset, one more per publication, in an epoch
// that changes when the server loses the channel's history.
// Channel.Position is that of the last publication delivered to the
// watcher. With Options.Recover, and the protocol extension, the client
// subscribes its channels again after a reconnect from their positions;
// the server sends the publications missed meanwhile first, and the
// watcher gets them in order, then the live ones:
//
//	c, err := client.Dial(ctx, url, client.Options{AutoReconnect: true, Recover: true})
//	c.OnError(func(err error) {
//		var lost *client.RecoveryError
//		if errors.As(err, &lost) { ... } // e.g. load lost.Channel's state afresh
//	})
//
// A recovery is never partial: when the server no longer has every
// publication after a position (its history was lost, or it keeps fewer
// publications than were missed), it sends none of them, and OnError gets
// a *RecoveryError, matching ErrRecoveryFailed, before the watcher gets
// any later publication; the channel stays subscribed and goes on from the
// server's position. Client.SubscribeFrom subscribes from a position kept
// elsewhere, e.g. across a restart of the program.
//
// The watcher gets each publication once: one whose offset is not after
// the last delivered in the same epoch is dropped. A channel that the
// client subscribed before its first publication (at offset 0) is
// recovered only if nothing was published while the client was away:
// the protocol cannot ask for the publications after offset 0, so the
// client reports a RecoveryError instead. With servers that do not speak
// the extension, Recover does nothing.
package client
