// Package cluster runs a clusterws application as N worker processes on one
// port: the Go form of ClusterWS's new ClusterWS({worker, workers, port,
// brokerPort, restartOnFail}).
//
//	func main() {
//		err := cluster.Run(cluster.Config{
//			Workers: 4, Port: 8080, RestartOnFail: true,
//			Worker: func(w *cluster.Worker) http.Handler {
//				w.Server.OnConnection(func(s *hub.Socket) { ... })
//				return w.Server.Middleware(app)
//			},
//		})
//		if err != nil {
//			log.Fatal(err)
//		}
//	}
//
// # Process model
//
// Run is called from main in every process. The first process is the
// master: it binds the port, starts the built-in TCP broker (package
// localbroker) on 127.0.0.1:BrokerPort inside its own process, with a
// fresh random secret, and starts Workers copies of the program
// (os.Args). A worker is told so by the CLUSTERWS_WORKER_ID environment
// variable (see IsWorker) and inherits three descriptors: fd 3, its
// connection socket, one end of a Unix socket pair on which the master
// sends it connections; fd 4, a pipe on which it says it is ready; fd 5,
// the lifeline, a pipe that carries the broker secret (so the secret is
// never in the environment) and whose end of file means the master is
// gone. The broker's address is in CLUSTERWS_BROKER_ADDR and the
// cluster's in CLUSTERWS_LISTEN_ADDR. In the worker, Run builds the broker
// (Config.Broker, or a localbroker link to the master's broker, also
// linked to the other workers unless Config.DisableDirectLinks), a
// clusterws.Server from Config.Options wired to it, calls Config.Worker
// with both, and serves the handler it returns with an http.Server on the
// connections from its connection socket. The worker reports ready once
// it serves and its broker link is up (or after 5s without it). When every
// worker is ready the master logs the startup lines: the master's address
// and PID, the broker's address and PID (the master's, since the broker
// runs inside it) and each worker's ID and PID. The master accepts the
// connections but serves no requests itself (with Config.ReusePort the
// workers accept them: see Accept in the workers).
//
// # Round-robin dispatch
//
// The master alone accepts from the listening socket, and hands each
// connection to a worker: it sends the connection's descriptor
// (SCM_RIGHTS) on that worker's connection socket, a SOCK_SEQPACKET pair
// on Linux, and closes its own copy. The worker's net.Listener receives it and
// returns an ordinary *net.TCPConn, with the client's address; the master
// is not in the connection's path after that. The workers take turns, in
// order, among those that are ready and not being stopped; one that
// cannot take a connection at once (it is gone, or its queue is full
// because it does not keep up) is skipped for the next. A connection that
// no worker can take waits in the master, at most 10s, then is closed and
// counted in the log; while 256 wait, the master stops accepting and new
// connections wait in the kernel's backlog.
//
// This is what Node's cluster module does, and for the same reason. With
// one listening socket that every worker accepts from, as before, the
// kernel wakes every waiting worker and the first to accept wins, which
// spreads connections very unevenly: 200 clients connecting one after
// another to two workers went 163 to one, 37 to the other. Handed out in
// turn, N connections reach each of W workers N/W times, as long as none
// restarts. SO_REUSEPORT, which gives each worker its own socket, spreads
// them by a hash of their addresses and ports instead, and loses the
// connections queued on a socket that closes unless the kernel moves them
// (net.ipv4.tcp_migrate_req): it is the Config.ReusePort mode, below, not
// the default.
//
// Since the master keeps accepting, a restart refuses nobody. A worker
// being stopped is first taken out of the rotation; the master then ends
// its stream of connections with a marker message and only then signals
// it. Its listener returns every connection sent before the marker, then
// reports itself closed, so the worker serves them all before it shuts
// down. While no worker is ready, connections wait in the master. Only a
// worker that dies on its own (a crash, kill -9) loses the connections it
// had been sent and had not yet accepted, usually none.
//
// The cost is one accept(2), one sendmsg(2) and one close(2) per
// connection in the master, and in the worker a recvmsg(2) and a dup(2)
// instead of an accept(2). Measured on a loaded 2-vCPU VM, two workers,
// 32 clients connecting for one HTTP request each: the master used 10 to
// 15µs more CPU time per connection than with the shared socket (16 to
// 22µs in all, its broker included), so one core of the master passes on
// the order of 50,000 connections per second; and the whole cluster,
// which shared the two vCPUs with the clients, served 6,500 to 8,200
// connections per second against 6,900 to 8,000 with the shared socket.
//
// # Accept in the workers
//
// With Config.ReusePort (Linux only) each worker opens its own listening
// socket on Host:Port with SO_REUSEPORT, once its broker link is up, just
// before it reports ready, and the kernel spreads new connections over
// the listeners of the workers. The master never listens on the port: a
// listening socket that nobody accepts from would still get its share of
// connections. To fail with ErrPortInUse as in the default mode, and to
// keep the port while no worker listens, it binds a socket with
// SO_REUSEPORT (and not SO_REUSEADDR, so that a plain listener cannot
// bind beside it) and never listens on it, and takes a lock, an abstract
// Unix socket named after the port, that a second cluster with ReusePort
// cannot take: SO_REUSEPORT alone would let it share the port unnoticed.
// The master's connection socket to each worker stays: it carries the
// admin listener's connections and the end marker.
//
// It saves the master's accept(2), sendmsg(2) and close(2), and the
// worker's recvmsg(2) and dup(2), per connection, and takes the master out
// of the connections' way: in our load test a quarter less CPU for the
// whole cluster per connect+subscribe, but no more connections per second
// on 2 shared cores (BENCHMARKS.md, "Issue 16: accept modes"). What it
// costs:
//
//   - Balance: the kernel hashes each connection's addresses and ports to
//     a listener, so each worker gets about, not exactly, its share, and
//     connections from one source are not spread in turns (60 requests to
//     3 workers went 21, 22 and 17).
//   - Lost connections: a listener that closes resets the connections
//     that completed their handshake on it but were not accepted yet, and
//     those still in their handshake. A worker that dies (kill -9, a
//     crash) loses them. A worker that stops gracefully keeps accepting
//     until the master ends its connection stream (which comes after its
//     replacement listens, in a rolling restart), then takes every
//     connection queued and closes its listener at once, from the same
//     goroutine; a connection that arrives between the two is reset. Linux
//     5.14 and later move these connections to another listener of the
//     port instead with the sysctl net.ipv4.tcp_migrate_req=1: the master
//     reads it at start and logs a warning when it is 0 or missing.
//   - While a worker restarts, its share goes to the others, as in the
//     default mode; while none listens, new connections are refused
//     instead of waiting in the master.
//
// In a graceful shutdown of the cluster each worker closes its listener
// as it stops, so new connections are refused from then on, as in the
// default mode.
//
// # Signals
//
// Workers run in their own process group, so a terminal's Ctrl-C reaches
// only the master, which then stops the workers in order. The master
// stops a worker (for a shutdown, a rolling restart or any other reason)
// by taking it out of the rotation, ending its stream of connections, and
// then sending it SIGTERM.
//
//   - SIGINT or SIGTERM to the master: graceful shutdown. The master
//     closes the listener, so that new connections are refused, stops
//     every worker as above (end of stream, then SIGTERM) and waits for
//     them up to ShutdownTimeout, then kills the stragglers with SIGKILL,
//     closes the broker, and Run returns nil, so main exits 0. A second
//     signal kills the workers at once. Cancelling the context of
//     RunContext does the same.
//   - SIGTERM to a worker: it serves the connections its master sent
//     before the end of the stream, which the master sends before the
//     signal, then stops accepting, turns HTTP keep-alives off and lets
//     the requests it has accepted finish, WebSocket upgrades included
//     (for at most half of its time), then shuts its http.Server down and
//     closes every WebSocket with 1001 "server shutting down" after its
//     queued frames (Server.Shutdown, since http.Server does not track
//     hijacked connections), closes its broker link, and exits 0, all
//     within 90% of ShutdownTimeout. A worker does the same when its
//     master is gone, without waiting for an end of stream that cannot
//     come: it serves the connections already sent, then stops. It does
//     not rely on http.Server.Shutdown alone,
//     which drops a request whose reading ends after the shutdown has
//     begun. A SIGTERM that did not come from the master, which still
//     sends connections, is followed by no end of stream: the worker
//     waits for it a quarter of its time, serving on, then closes its
//     connection socket; what the master sent in between is lost, and the
//     worker's exit is unexpected for the restart policy.
//   - SIGHUP to the master: rolling restart, one worker at a time: start a
//     replacement with the same ID (from the program file as it is now, so
//     a new binary is picked up), wait until it is ready, then stop the old
//     one gracefully and wait for it to exit before the next. The master
//     accepts throughout, so no connection is refused or dropped. A
//     replacement that exits or is not ready within a minute aborts the
//     rolling restart; the old workers keep running. Since SIGHUP also
//     means "the terminal closed", run the master under a service manager
//     or nohup in production. The master itself is not replaced, and a
//     new binary's workers must speak its version of the connection
//     socket: after an upgrade of this package, restart the master.
//
// # Admin listener
//
// With Config.AdminAddr the master serves one place to scrape and probe,
// so that nothing lands on a random worker:
//
//	GET /metrics  Prometheus exposition: every worker's series (package
//	              metrics, with the Go runtime's and the process's), each
//	              labelled worker="1"…worker="N", and the master's own,
//	              without that label: clusterws_cluster_* (workers, restarts,
//	              connections dispatched, dropped and held) and, with the
//	              TCP broker, clusterws_tcpbroker_* (links, channels,
//	              publishes received and forwarded, slow links).
//	GET /healthz  200 while the master runs.
//	GET /readyz   200 while the master is not shutting down and every worker
//	              in the rotation, at least one, is ready (Server.Ready: it
//	              accepts sockets and a probe made a round trip through its
//	              broker); 503 from the first moment of a shutdown, with the
//	              reasons.
//	/api/...      with Config.APIKey, the HTTP API of package api.
//
// The master reaches a worker over the worker's connection socket: for
// each HTTP connection to a worker it makes a Unix stream socket pair and
// sends one end, with the message type 'a', where connections go with
// 'c'; the worker's listener hands it to the worker's admin server, a
// second http.Server that serves /metrics, /readyz, /stats and /api/ of
// that worker only, to the master only (the socket pair is private to
// the two processes). The master keeps a few such connections alive per
// worker. A scrape asks every ready worker at once, each within 5s; a
// worker that does not answer is left out of that scrape, logged and
// counted (clusterws_cluster_scrape_errors_total). API requests go to
// the workers in turn, after the master checked the key (the worker
// checks it again); a worker's Server publishes, sends and disconnects
// through the broker, so every worker and host is reached.
// GET /api/stats asks every worker and answers their stats and sum.
//
// A worker leaves the rotation of the admin listener when it leaves the
// dispatcher's: when it is asked to stop, or exits.
//
// # Drain
//
// A stopping worker (a shutdown or a rolling restart) closes its sockets
// with 1001 spread over Config.DrainWindow (see clusterws.WithDrainWindow),
// so its clients reconnect at a steady rate rather than all at once,
// within 90% of ShutdownTimeout. Readiness fails first: the master
// answers 503 from the moment a shutdown begins.
//
// # Restart policy
//
// A worker that exits without being asked to (a crash, a panic, kill -9,
// or one not ready within a minute of its start, which is killed) is, with
// RestartOnFail, started again with the same ID after a backoff of 100 ms
// doubling to 5 s, jittered (each wait is between half and all of that),
// so that workers that crashed together do not restart together; the
// backoff starts over after a worker that ran for 30s. A worker that exits 5 times within 30s
// is crash-looping: the master logs an error and leaves that ID down (a
// rolling restart tries it again). Without RestartOnFail a dead worker is
// logged and not replaced. When no worker is left running, starting or
// due to restart, the master shuts down and Run returns ErrNoWorkers: a
// port that accepts connections nobody serves helps no one.
//
// # No orphans
//
// Workers die with their master however it ends. On Linux each worker is
// started with Pdeathsig SIGTERM, so the kernel asks it to shut down
// gracefully when the master dies, even by SIGKILL. On every system, and
// as a fallback on Linux, the worker also watches the lifeline pipe, whose
// only write end is in the master: when the master is gone the pipe ends
// and the worker shuts down the same way.
//
// # Logging
//
// Unlike the rest of the module, the cluster logs by default (to stderr,
// with slog's text handler at level Info), because its startup lines are
// how an operator learns where things run, as in ClusterWS. Set
// Config.Logger to change or silence it. The cluster's lines carry the
// attribute component=cluster, and a worker's also worker=ID; their
// messages are plain lower-case sentences, the rest is in attributes.
// Workers' stdout and stderr are the master's.
//
// # Concurrency
//
// In the master one goroutine, the caller of Run, owns all supervisor
// state. Every other goroutine has an owner that stops it and waits for
// it before Run returns:
//
//   - the spawner starts every worker process from one locked OS thread
//     (see No orphans), until Run returns;
//   - each worker process has a goroutine that waits for it and one that
//     reads its readiness pipe, both ending when the process has exited,
//     which the supervisor guarantees by killing it if need be, and, while
//     it is being stopped, one that ends its stream and signals it,
//     within a quarter of ShutdownTimeout;
//   - the dispatcher has a goroutine that accepts and hands the
//     connections over and one that offers the held ones again; the
//     supervisor adds a worker to the rotation and removes it, and closes
//     the dispatcher as a shutdown begins, which stops both;
//   - the admin listener's http.Server has a serving goroutine and those
//     of its requests; Run closes it as it returns and waits for the
//     serving one.
//
// In a worker, Run owns the http.Server and the goroutine serving it,
// which ends with the connection stream (the end marker, the master gone,
// or after a quarter of the worker's time), with ReusePort a second one
// serving its own listener, which ends when Run drains and closes that
// listener after the first has ended, the Server, a goroutine
// watching the lifeline, which ends at its end of file or when Run closes
// it, and with an admin listener the worker's admin server and its
// serving goroutine, which Run closes last; Run waits for all of them
// before it returns.
//
// Locks: the package has three mutexes, the dispatcher's in the master,
// which guards the rotation and the hold queue and is held across the
// sends, which never wait, the admin listener's, which guards its list of
// workers and is held only to read or change it, and the connection
// tracker's in a worker. Each is taken while holding no other lock of the
// package, so there is no order between them to keep; under the
// dispatcher's, only the logger's handler may take a lock of its own.
//
// Run needs Unix (descriptor passing, to child processes and between
// processes); elsewhere it returns ErrUnsupported. The connection socket
// is a SOCK_SEQPACKET pair on Linux; elsewhere (macOS has no such Unix
// sockets) it is a datagram pair, which does not report that the master
// is gone: the worker learns it from its lifeline alone.
package cluster
