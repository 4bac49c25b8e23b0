package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/option"
)

// Config describes a cluster. The zero value of every field but Worker
// means its default; Run validates a copy and never modifies the caller's
// struct. The same Config must be passed to Run in the master and in every
// worker, which is what happens when main builds it the same way each time.
type Config struct {
	// Workers is the number of worker processes. default: 1
	Workers int

	// Port is the TCP port the cluster serves HTTP and WebSocket on; the
	// master binds it, accepts every connection and hands each to a
	// worker in turn (with ReusePort, each worker accepts on its own).
	// default: 80, as in ClusterWS
	Port int

	// Host is the address to bind Port on, e.g. "127.0.0.1".
	// default: "", all interfaces
	Host string

	// ReusePort makes each worker accept on its own SO_REUSEPORT listener
	// on Host:Port instead of the master accepting every connection and
	// handing it over: no extra system calls nor process hop per
	// connection, and no single accepting process. The master only
	// reserves the port (bound, never listening), so that it still fails
	// with ErrPortInUse when the port is taken, and so that nothing else
	// takes it while no worker listens.
	//
	// The trade-offs: the kernel spreads connections by a hash of their
	// addresses and ports, not in even turns, so workers get roughly, not
	// exactly, equal shares. And a listener that closes resets the
	// connections queued on it, not yet accepted: those of a worker that
	// dies, and the few that arrive as a stopping worker closes its
	// listener after taking what is queued, unless the kernel moves them
	// to another worker's listener, which Linux 5.14 and later do with the
	// sysctl net.ipv4.tcp_migrate_req=1. The master logs a warning at
	// start when it is off. While a worker restarts, new connections go
	// to the others. See the package documentation.
	//
	// Linux only: elsewhere Run returns an error wrapping
	// ErrInvalidOption.
	// default: false, the master accepts and hands over
	ReusePort bool

	// BrokerPort is the loopback port of the built-in TCP broker, which
	// runs inside the master process. Unused when Broker is set. Two
	// clusters on one machine need two of them, as they need two Ports.
	// default: 9346, as in ClusterWS
	BrokerPort int

	// DisableDirectLinks routes every publish through the broker in the
	// master. By default the workers also link to each other over
	// loopback TCP, and a plain publish goes from worker to worker
	// (localbroker.Options.Direct): a hop and the master's waking up less
	// per delivery, so lower latency at low load and more throughput
	// across workers (BENCHMARKS.md). The links cost a TCP connection per
	// pair of workers and a loopback port per worker; a worker's Subscribe
	// also waits for every linked worker's ack, and a new worker's until
	// every worker knows it. The master relays while a link is not up, and
	// history and presence go through it either way. Unused when Broker is
	// set.
	// default: false, the workers link to each other
	DisableDirectLinks bool

	// RestartOnFail restarts a worker that exits without being asked to,
	// with backoff, until it crash-loops (see the package documentation).
	// Without it a dead worker is logged and not replaced.
	// default: false
	RestartOnFail bool

	// Options are applied, in order, to every worker's clusterws.Server,
	// followed by clusterws.WithBroker with the worker's broker.
	// default: none
	Options []clusterws.Option

	// Broker, when set, is called once in every worker process to build
	// the hub.Broker that links the workers, e.g. a redisbroker.Broker to
	// link hosts too; the master then starts no TCP broker. A nil Broker
	// returned without error means none: every worker is on its own.
	// default: nil, the built-in TCP broker (package localbroker)
	Broker func() (hub.Broker, error)

	// Worker runs in every worker process once its Server is built: it
	// registers the socket handlers on w.Server and returns the worker's
	// whole HTTP handler, typically w.Server.Middleware(app).
	// required
	Worker func(w *Worker) http.Handler

	// ShutdownTimeout bounds a graceful stop. A worker asked to stop
	// drains within 90% of it; the master kills a worker that is still
	// alive after all of it.
	// default: 10s
	ShutdownTimeout time.Duration

	// Logger receives the startup lines and the supervisor's events, in
	// the master and in the workers, with the attribute component=cluster
	// (and worker=ID in a worker). It is also, as given, the TCP broker's
	// logger. Unlike the rest of the module, the cluster is not silent by
	// default: like ClusterWS it announces the master, the broker and
	// every worker at startup. Pass slog.New(slog.DiscardHandler) to
	// silence it.
	// default: a slog.TextHandler writing to os.Stderr at level Info
	Logger *slog.Logger

	// AdminAddr is the address of the admin listener, which the master
	// serves: GET /metrics (every worker's, labelled worker="N", and the
	// master's and TCP broker's own), /healthz, /readyz and, with APIKey,
	// the HTTP API of package api under /api/. See the package
	// documentation. An address without a host (":9100") listens on
	// loopback only; name the host ("0.0.0.0:9100") to listen on more.
	// default: "", no admin listener
	AdminAddr string

	// APIKey turns the HTTP API on, on the admin listener: every request
	// must carry it as Authorization: Bearer KEY. Use a long random
	// string, e.g. from os.Getenv("CLUSTERWS_API_KEY").
	// default: "", no API
	APIKey string

	// DrainWindow is applied to every worker's Server
	// (clusterws.WithDrainWindow, before Options): a stopping worker
	// spreads the closes of its sockets over it, within its share of
	// ShutdownTimeout.
	// default: clusterws's, 5s
	DrainWindow time.Duration
}

// Worker is what Config.Worker gets in a worker process.
type Worker struct {
	// ID is the worker's number, from 1 to Config.Workers. A restarted or
	// replaced worker keeps the ID of the one it replaces.
	ID int
	// Server is the worker's clusterws.Server, built from Config.Options
	// and wired to the cluster's broker. The cluster shuts it down.
	Server *clusterws.Server
}

// Defaults, as documented on the Config fields.
const (
	DefaultWorkers         = 1
	DefaultPort            = 80
	DefaultBrokerPort      = 9346
	DefaultShutdownTimeout = 10 * time.Second
)

// Errors.
var (
	// ErrInvalidOption is wrapped by the error Run returns for a Config
	// that cannot be used; the error names each field at fault.
	ErrInvalidOption = errors.New("cluster: invalid option")
	// ErrPortInUse is wrapped by the error Run returns in the master when
	// Config.Port or Config.BrokerPort is taken, typically by another
	// instance; the error names the field.
	ErrPortInUse = errors.New("cluster: port in use")
	// ErrNoWorkers is returned by Run in the master when the last worker
	// is gone and none will be started again: each one crash-looped, or
	// died without RestartOnFail.
	ErrNoWorkers = errors.New("cluster: no worker left running")
	// ErrUnsupported is returned by Run on systems without the process
	// and file-descriptor passing it needs (everything but Unix).
	ErrUnsupported = errors.New("cluster: unsupported on this operating system")
)

// Environment variables set by the master for its workers. Run reads and
// removes them in a worker, so the worker's own child processes do not
// take themselves for workers.
const (
	envWorkerID   = "CLUSTERWS_WORKER_ID"
	envBrokerAddr = "CLUSTERWS_BROKER_ADDR"
	envListenAddr = "CLUSTERWS_LISTEN_ADDR" // what the worker's listener reports as its Addr
	envReusePort  = "CLUSTERWS_REUSEPORT"   // "1": the worker listens itself (Config.ReusePort)
)

// IsWorker reports whether this process was started by a cluster master as
// one of its workers, i.e. whether Run will behave as a worker. Call it
// before Run, e.g. to open resources only workers need.
func IsWorker() bool { return os.Getenv(envWorkerID) != "" }

// Run runs the cluster described by cfg. It is called from main in the
// master and in every worker: the master re-executes the program
// (os.Args) once per worker, and Run tells the two apart by an environment
// variable the master sets (see IsWorker).
//
// In the master, Run binds the port, starts the TCP broker and the
// workers, supervises them, and returns nil after a graceful shutdown on
// SIGINT or SIGTERM, or an error: an invalid Config (ErrInvalidOption), a
// port that cannot be bound (ErrPortInUse when another process has it), or
// ErrNoWorkers. SIGHUP restarts the workers one at a time.
//
// In a worker, Run builds the Server and calls cfg.Worker, serves until
// the master asks it to stop (SIGTERM) or is gone, and returns nil after a
// graceful shutdown; main should then return. Any error returns early, and
// the master sees the worker die.
func Run(cfg Config) error { return RunContext(context.Background(), cfg) }

// RunContext is Run with a context: cancelling ctx is a graceful shutdown,
// in the master like SIGTERM, in a worker like its master asking it to
// stop. It returns nil after a shutdown caused by ctx.
func RunContext(ctx context.Context, cfg Config) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if v, ok := os.LookupEnv(envWorkerID); ok && v != "" {
		id, err := strconv.Atoi(v)
		if err != nil || id < 1 {
			return fmt.Errorf("cluster: bad %s=%q in the environment", envWorkerID, v)
		}
		brokerAddr, listenAddr := os.Getenv(envBrokerAddr), os.Getenv(envListenAddr)
		// The master's mode, not the worker's Config, decides: a worker
		// that listened while its master accepts, or the other way
		// round, would not serve.
		c.ReusePort = os.Getenv(envReusePort) == "1"
		os.Unsetenv(envWorkerID)
		os.Unsetenv(envBrokerAddr)
		os.Unsetenv(envListenAddr)
		os.Unsetenv(envReusePort)
		return runWorker(ctx, c, id, brokerAddr, listenAddr)
	}
	return runMaster(ctx, c)
}

// withDefaults returns a validated copy of c with every default filled in.
// Errors name the field and wrap ErrInvalidOption.
func (c Config) withDefaults() (Config, error) {
	ch := option.NewCheck(ErrInvalidOption)
	if c.Worker == nil {
		ch.Failf("Worker", "is required")
	}
	option.NotNegative(ch, "Workers", c.Workers)
	port(ch, "Port", c.Port)
	port(ch, "BrokerPort", c.BrokerPort)
	option.NotNegative(ch, "ShutdownTimeout", c.ShutdownTimeout)
	option.NotNegative(ch, "DrainWindow", c.DrainWindow)
	if _, _, err := net.SplitHostPort(c.AdminAddr); c.AdminAddr != "" && err != nil {
		ch.Failf("AdminAddr", "must be host:port or :port (got %q)", c.AdminAddr)
	}
	checkReusePort(ch, c.ReusePort, runtime.GOOS)
	if c.APIKey != "" && c.AdminAddr == "" {
		ch.Failf("APIKey", "needs AdminAddr: the API is served on the admin listener")
	}
	if err := ch.Err(); err != nil {
		return Config{}, err
	}
	c.Workers = option.Default(c.Workers, DefaultWorkers)
	c.Port = option.Default(c.Port, DefaultPort)
	c.BrokerPort = option.Default(c.BrokerPort, DefaultBrokerPort)
	if c.Broker == nil && c.BrokerPort == c.Port {
		ch.Failf("BrokerPort", "must differ from Port (both are %d)", c.Port)
		return Config{}, ch.Err()
	}
	c.ShutdownTimeout = option.Default(c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	c.Options = slices.Clone(c.Options)
	return c, nil
}

// port records field as invalid unless v is a TCP port or 0, the default.
func port(c *option.Check, field string, v int) {
	if v < 0 || v > 65535 {
		c.Failf(field, "must be a TCP port, from 1 to 65535, or 0 for the default (got %d)", v)
	}
}

// checkReusePort records ReusePort as invalid on systems other than Linux,
// goos: elsewhere SO_REUSEPORT does not spread connections between
// listeners (FreeBSD's SO_REUSEPORT_LB does, but is not supported here).
func checkReusePort(c *option.Check, reusePort bool, goos string) {
	if reusePort && goos != "linux" {
		c.Failf("ReusePort", "needs Linux, whose SO_REUSEPORT spreads connections between the workers' listeners (this is %s)", goos)
	}
}
