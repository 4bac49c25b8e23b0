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
// variable (see IsWorker) and inherits three descriptors: fd 3, the
// listening socket; fd 4, a pipe on which it says it is ready; fd 5, the
// lifeline, a pipe that carries the broker secret (so the secret is never
// in the environment) and whose end of file means the master is gone. The
// broker's address is in CLUSTERWS_BROKER_ADDR. In the worker, Run builds
// the broker (Config.Broker, or a localbroker link to the master's
// broker), a clusterws.Server from Config.Options wired to it, calls
// Config.Worker with both, and serves the handler it returns with an
// http.Server on the inherited socket. The worker reports ready once it
// serves and its broker link is up (or after 5s without it). When every
// worker is ready the master logs the startup lines: the master's address
// and PID, the broker's address and PID (the master's, since the broker
// runs inside it) and each worker's ID and PID. The master serves no
// requests itself.
//
// # Why one shared listener
//
// The master binds the port once and every worker accepts from that same
// socket, so all of them share one accept queue. The master keeps the
// socket open for its whole life: while a worker restarts, or while none
// is running at all, new connections wait in the kernel's backlog until a
// worker accepts them, instead of being refused. SO_REUSEPORT, the
// alternative, gives each worker its own socket and queue; connections
// hashed to a socket that is closing are reset, so it cannot promise that
// a restart refuses nobody. The price of the shared queue is that the
// kernel gives each connection to whichever worker accepts first, which
// balances well under load but is not round-robin.
//
// # Signals
//
// Workers run in their own process group, so a terminal's Ctrl-C reaches
// only the master, which then stops the workers in order.
//
//   - SIGINT or SIGTERM to the master: graceful shutdown. The master sends
//     SIGTERM to every worker and waits for them up to ShutdownTimeout,
//     then kills the stragglers with SIGKILL, closes the broker and the
//     listener, and Run returns nil, so main exits 0. A second signal kills
//     the workers at once. Cancelling the context of RunContext does the
//     same.
//   - SIGTERM to a worker: it stops accepting, turns HTTP keep-alives off
//     and lets the requests it has accepted finish, WebSocket upgrades
//     included (for at most half of its time), then shuts its
//     http.Server down and closes every WebSocket with 1001 "server
//     shutting down" after its queued frames (Server.Shutdown, since
//     http.Server does not track hijacked connections), closes its broker
//     link, and exits 0, all within 90% of ShutdownTimeout. A worker does
//     the same when its master is gone. It does not rely on
//     http.Server.Shutdown alone, which drops a request whose reading ends
//     after the shutdown has begun.
//   - SIGHUP to the master: rolling restart, one worker at a time: start a
//     replacement with the same ID (from the program file as it is now, so
//     a new binary is picked up), wait until it is ready, then stop the old
//     one gracefully and wait for it to exit before the next. The listener
//     stays open in the master throughout, so no connection is refused. A
//     replacement that exits or is not ready within a minute aborts the
//     rolling restart; the old workers keep running. Since SIGHUP also
//     means "the terminal closed", run the master under a service manager
//     or nohup in production.
//
// # Restart policy
//
// A worker that exits without being asked to (a crash, a panic, kill -9,
// or one not ready within a minute of its start, which is killed) is, with
// RestartOnFail, started again with the same ID after a backoff of 100ms,
// doubled for each further such exit up to 5s; the backoff starts over
// after a worker that ran for 30s. A worker that exits 5 times within 30s
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
// Config.Logger to change or silence it. Workers log with a "worker"
// attribute; their stdout and stderr are the master's.
//
// # Concurrency
//
// In the master one goroutine, the caller of Run, owns all supervisor
// state; each worker process has a goroutine that waits for it and one
// that reads its readiness pipe, both ending when the process has exited,
// which the master guarantees. In a worker, Run owns the http.Server, the
// Server and a goroutine watching the lifeline, and waits for all of them
// before it returns.
//
// Run needs Unix (descriptor passing to child processes); elsewhere it
// returns ErrUnsupported.
package cluster
