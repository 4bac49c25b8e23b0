//go:build unix

package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/clusterws/clusterws-go/internal/backoff"
	"github.com/clusterws/clusterws-go/localbroker"
)

// The restart policy, as documented in the package documentation.
const (
	crashLoopLimit  = 5
	crashLoopWindow = 30 * time.Second
	readyTimeout    = time.Minute
)

// restartBackoff is the wait before the restart after the n-th
// consecutive unexpected exit.
var restartBackoff = backoff.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// master supervises the workers. Apart from the fields set up before the
// loop starts, its state is owned by the goroutine that runs loop, the
// caller of Run; the other goroutines, one pair per worker process, only
// send events.
type master struct {
	cfg        Config
	log        *slog.Logger
	pid        int
	addr       net.Addr            // the cluster's address
	disp       *dispatcher         // accepts and hands the connections to the workers; nil with ReusePort
	reserved   *reservation        // with ReusePort: the port, bound for the workers' listeners
	admin      *admin              // the admin listener; nil without Config.AdminAddr
	broker     *localbroker.Server // nil when Config.Broker is set
	brokerAddr string
	secret     string

	events chan event
	wg     sync.WaitGroup // the watch and release goroutines
	spawns chan spawnRequest

	// Owned by the loop goroutine.
	slots     []*slot
	procs     map[*proc]struct{} // processes not yet reaped
	announced bool               // the startup lines are out
	shutdown  bool               // a graceful shutdown is under way
	result    error              // what Run returns after the shutdown
	rolling   bool               // a rolling restart is under way
	roll      []*slot            // slots the rolling restart has yet to replace
	rollOld   *proc              // the replaced process the rolling restart waits for
}

// slot is one worker ID and the processes that have served as it.
type slot struct {
	id          int
	cur         *proc       // the process serving as this worker; nil while down
	next        *proc       // its replacement during a rolling restart
	restartAt   time.Time   // a pending restart; zero if none
	crashes     []time.Time // unexpected exits within crashLoopWindow
	consecutive int         // unexpected exits of processes that ran less than crashLoopWindow
}

// proc is one worker process.
type proc struct {
	slot    *slot
	c       *child
	pid     int
	started time.Time
	readyBy time.Time // killed as hung if not ready by then
	ready   bool
	stop    bool      // the master asked it to stop
	killAt  time.Time // when stop: SIGKILL if still alive then
	killed  bool
}

// event is reported by a worker's watch goroutines: first ready (if the
// worker said so), then exited.
type event struct {
	p     *proc
	ready bool  // false: the process exited
	err   error // exit status, from exec.Cmd.Wait
}

func runMaster(ctx context.Context, cfg Config) error {
	m := &master{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "cluster"),
		pid:    os.Getpid(),
		events: make(chan event),
		procs:  make(map[*proc]struct{}),
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	if cfg.ReusePort {
		// Each worker listens; the master only keeps the port, until
		// the workers are gone.
		r, err := reservePort(cfg.Host, cfg.Port)
		if err != nil {
			return listenError("Port", addr, err)
		}
		defer r.Close()
		m.reserved, m.addr = r, r.Addr()
		warnMigrateReq(m.log, migrateReqPath)
	} else {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return listenError("Port", addr, err)
		}
		m.addr = ln.Addr()
		if m.disp, err = newDispatcher(ln, m.log, defaultHold); err != nil {
			return err
		}
		defer m.disp.close()
	}

	var err error

	if cfg.Broker == nil {
		m.secret = rand.Text()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.BrokerPort))
		m.broker, err = localbroker.Listen(localbroker.ServerOptions{Addr: addr, Secret: m.secret, Logger: cfg.Logger})
		if err != nil {
			return listenError("BrokerPort", addr, err)
		}
		defer m.broker.Close()
		m.brokerAddr = m.broker.Addr().String()
	}
	if cfg.AdminAddr != "" {
		if m.admin, err = startAdmin(cfg, m.log, m.disp, m.broker); err != nil {
			return err
		}
		defer m.admin.close()
	}

	m.spawns = make(chan spawnRequest)
	spawnerDone := make(chan struct{})
	go m.spawner(spawnerDone)
	defer func() {
		close(m.spawns)
		<-spawnerDone
	}()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	for id := 1; id <= cfg.Workers; id++ {
		s := &slot{id: id}
		m.slots = append(m.slots, s)
		p, err := m.spawn(s)
		if err != nil {
			m.beginShutdown("a worker could not start", fmt.Errorf("cluster: start worker %d: %w", id, err))
			break
		}
		s.cur = p
	}
	err = m.loop(ctx, sigs)
	m.wg.Wait()
	m.log.Info("master stopped", "pid", m.pid)
	return err
}

// listenError explains why addr, the port of Config field, cannot be
// bound. A port in use is most often a second instance of the program on
// the same machine, which dies there with no other hint.
func listenError(field, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w: %s (another instance may be running: stop it, or set cluster.Config.%s to a free port): %w",
			ErrPortInUse, addr, field, err)
	}
	return fmt.Errorf("cluster: listen on %s (cluster.Config.%s): %w", addr, field, err)
}

// loop handles events, signals and deadlines until the shutdown is over
// and every worker process has been reaped.
func (m *master) loop(ctx context.Context, sigs <-chan os.Signal) error {
	done := ctx.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for !m.shutdown || len(m.procs) > 0 {
		var deadline <-chan time.Time
		if at, ok := m.nextDeadline(); ok {
			timer.Reset(time.Until(at))
			deadline = timer.C
		}
		select {
		case ev := <-m.events:
			if ev.ready {
				m.ready(ev.p)
			} else {
				m.exited(ev.p, ev.err)
			}
		case sig := <-sigs:
			m.signal(sig)
		case <-done:
			done = nil
			m.beginShutdown("context done", nil)
		case <-deadline:
		}
		timer.Stop()
		m.tick(time.Now())
	}
	return m.result
}

type spawnRequest struct {
	spec  workerSpec
	reply chan<- spawnResult
}

type spawnResult struct {
	c   *child
	err error
}

// spawner starts every worker process from one OS thread that lives until
// Run returns. Pdeathsig is tied to the thread that forked the worker, not
// to the process, and a Go thread ends when a goroutine locked to it exits
// without unlocking (golang/go#27505); no other goroutine can lock this
// one while the spawner holds it.
func (m *master) spawner(done chan<- struct{}) {
	defer close(done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for req := range m.spawns {
		c, err := startWorker(req.spec)
		req.reply <- spawnResult{c, err}
	}
}

// spawn starts a process for s. It does not assign it to s.
func (m *master) spawn(s *slot) (*proc, error) {
	reply := make(chan spawnResult, 1)
	m.spawns <- spawnRequest{
		spec: workerSpec{
			path:       os.Args[0],
			args:       os.Args[1:],
			id:         s.id,
			brokerAddr: m.brokerAddr,
			secret:     m.secret,
			listenAddr: m.addr.String(),
			reusePort:  m.cfg.ReusePort,
			attr:       sysProcAttr(),
		},
		reply: reply,
	}
	res := <-reply
	if res.err != nil {
		return nil, res.err
	}
	c := res.c
	now := time.Now()
	p := &proc{slot: s, c: c, pid: c.cmd.Process.Pid, started: now, readyBy: now.Add(readyTimeout)}
	m.procs[p] = struct{}{}
	m.wg.Add(1)
	go m.watch(p)
	m.log.Debug("worker started", "worker", s.id, "pid", p.pid)
	return p, nil
}

// watch reports p's readiness and exit to the loop. It ends when the
// process has exited, which the loop guarantees by killing it if need be.
func (m *master) watch(p *proc) {
	defer m.wg.Done()
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		if waitReady(p.c.ready) {
			m.events <- event{p: p, ready: true}
		}
	}()
	err := p.c.cmd.Wait()
	// A child of the worker may still hold the pipe's write end; closing
	// the read end stops the reader in any case.
	p.c.ready.Close()
	<-readyDone
	m.events <- event{p: p, err: err}
}

func (m *master) ready(p *proc) {
	p.ready = true
	s := p.slot
	if p.stop || p.killed {
		return
	}
	m.disp.add(p.c.conns)
	m.admin.add(p)
	switch {
	case p == s.next:
		old := s.cur
		s.cur, s.next = p, nil
		if old == nil {
			m.log.Info("worker replaced", "worker", s.id, "pid", p.pid)
			m.advanceRoll()
			return
		}
		m.log.Info("worker replaced", "worker", s.id, "pid", p.pid, "old_pid", old.pid)
		m.rollOld = old
		m.stop(old)
	case !m.announced:
		m.maybeAnnounce()
	default:
		m.log.Info("worker restarted", "worker", s.id, "pid", p.pid)
	}
}

func (m *master) exited(p *proc, err error) {
	delete(m.procs, p)
	m.disp.remove(p.c.conns)
	m.admin.remove(p)
	p.c.conns.close()
	p.c.lifeline.Close()
	s := p.slot
	if p.stop {
		m.log.Info("worker stopped", "worker", s.id, "pid", p.pid, "status", exitStatus(err))
		if s.cur == p {
			s.cur = nil
		}
		if s.next == p {
			s.next = nil
		}
		if p == m.rollOld {
			m.rollOld = nil
			m.advanceRoll()
		}
		return
	}
	ran := time.Since(p.started)
	m.log.Error("worker exited unexpectedly", "worker", s.id, "pid", p.pid,
		"status", exitStatus(err), "ran", ran.Round(time.Millisecond))
	switch p {
	case s.next:
		s.next = nil
		m.abortRoll(s, "the new worker exited before it was ready")
		if s.cur == nil {
			m.crashed(s, ran)
		}
	case s.cur:
		s.cur = nil
		if s.next == nil { // else the replacement is on its way
			m.crashed(s, ran)
		}
	}
	if !m.announced {
		m.maybeAnnounce()
	}
	m.checkAlive()
}

// crashed applies the restart policy to s after an unexpected exit of a
// process that ran for ran.
func (m *master) crashed(s *slot, ran time.Duration) {
	if m.shutdown {
		return
	}
	if !m.cfg.RestartOnFail {
		m.log.Error("worker is not restarted (RestartOnFail is off)", "worker", s.id)
		return
	}
	now := time.Now()
	s.crashes = slices.DeleteFunc(s.crashes, func(t time.Time) bool { return now.Sub(t) > crashLoopWindow })
	s.crashes = append(s.crashes, now)
	if len(s.crashes) >= crashLoopLimit {
		m.log.Error("worker is crash-looping; not restarting it", "worker", s.id,
			"crashes", len(s.crashes), "within", crashLoopWindow)
		s.crashes, s.consecutive = nil, 0
		return
	}
	if ran >= crashLoopWindow {
		s.consecutive = 0
	}
	s.consecutive++
	d := restartBackoff.Delay(s.consecutive)
	s.restartAt = now.Add(d)
	m.admin.restarted()
	m.log.Info("restarting worker", "worker", s.id, "in", d)
}

// checkAlive stops the master when no worker is running, starting or due
// to restart.
func (m *master) checkAlive() {
	if m.shutdown {
		return
	}
	for _, s := range m.slots {
		if s.cur != nil || s.next != nil || !s.restartAt.IsZero() {
			return
		}
	}
	m.log.Error("no worker left; stopping")
	m.beginShutdown("no worker left", ErrNoWorkers)
}

// maybeAnnounce logs the startup lines once every worker is ready or down
// for good.
func (m *master) maybeAnnounce() {
	for _, s := range m.slots {
		settled := (s.cur != nil && s.cur.ready) || (s.cur == nil && s.next == nil && s.restartAt.IsZero())
		if !settled {
			return
		}
	}
	if m.shutdown {
		return
	}
	m.announced = true
	accept := "master"
	if m.cfg.ReusePort {
		accept = "workers (reuseport)"
	}
	m.log.Info("master is running", "addr", m.addr.String(), "pid", m.pid, "workers", len(m.slots), "accept", accept)
	if m.broker != nil {
		m.log.Info("broker is running", "addr", m.brokerAddr, "pid", m.pid, "process", "master")
	} else {
		m.log.Info("broker is Config.Broker, built in every worker")
	}
	for _, s := range m.slots {
		if s.cur != nil {
			m.log.Info("worker is running", "worker", s.id, "pid", s.cur.pid)
		} else {
			m.log.Warn("worker is not running", "worker", s.id)
		}
	}
}

func (m *master) signal(sig os.Signal) {
	if sig != syscall.SIGHUP {
		if m.shutdown {
			m.log.Warn("second signal: killing the workers", "signal", sig.String())
			for p := range m.procs {
				m.kill(p)
			}
			return
		}
		m.beginShutdown(sig.String(), nil)
		return
	}
	switch {
	case m.shutdown:
	case !m.announced:
		m.log.Warn("SIGHUP ignored: the cluster is still starting")
	case m.rolling:
		m.log.Warn("SIGHUP ignored: a rolling restart is under way")
	default:
		m.rolling = true
		m.roll = slices.Clone(m.slots)
		m.log.Info("rolling restart started", "workers", len(m.slots))
		m.advanceRoll()
	}
}

// advanceRoll starts the replacement for the next slot of the rolling
// restart, or ends it.
func (m *master) advanceRoll() {
	if !m.rolling {
		return
	}
	if len(m.roll) == 0 {
		m.rolling = false
		m.log.Info("rolling restart finished")
		return
	}
	s := m.roll[0]
	m.roll = m.roll[1:]
	p, err := m.spawn(s)
	if err != nil {
		m.abortRoll(s, err.Error())
		return
	}
	// A new program deserves a fresh start, crash-looped slots included.
	s.next, s.restartAt, s.crashes, s.consecutive = p, time.Time{}, nil, 0
}

func (m *master) abortRoll(s *slot, reason string) {
	if !m.rolling {
		return
	}
	m.log.Error("rolling restart aborted; the remaining workers keep running", "worker", s.id, "reason", reason)
	m.rolling, m.roll, m.rollOld = false, nil, nil
}

func (m *master) beginShutdown(reason string, result error) {
	m.shutdown, m.result = true, result
	m.admin.shuttingDown()
	// No new connection: they are refused from now on rather than left
	// waiting for workers that are all stopping. With ReusePort each
	// worker closes its own listener as it stops, at once.
	m.disp.close()
	m.rolling, m.roll, m.rollOld = false, nil, nil
	for _, s := range m.slots {
		s.restartAt = time.Time{}
	}
	m.log.Info("shutting down", "reason", reason, "workers", len(m.procs))
	for p := range m.procs {
		m.stop(p)
	}
}

// stop asks p to shut down gracefully; tick kills it after ShutdownTimeout.
// No connection is sent to p any more, and release tells it so before it
// signals it.
func (m *master) stop(p *proc) {
	if p.stop {
		return
	}
	p.stop = true
	now := time.Now()
	p.killAt = now.Add(m.cfg.ShutdownTimeout)
	m.disp.remove(p.c.conns)
	m.admin.remove(p)
	m.wg.Add(1)
	// A worker whose queue stays full is stuck: it still gets most of the
	// budget to shut down after SIGTERM.
	go m.release(p, now.Add(m.cfg.ShutdownTimeout/4))
}

// release ends p's connection stream, so that p serves every connection
// sent to it before it stops, and then sends it SIGTERM. Ending the
// stream waits, until deadline, only when p has a full queue; hence a
// goroutine, that ends by deadline or when the loop closes the socket
// after p has exited. It touches only what does not change in p.
func (m *master) release(p *proc, deadline time.Time) {
	defer m.wg.Done()
	if err := p.c.conns.end(deadline); err != nil && !errors.Is(err, net.ErrClosed) && !peerGone(err) {
		m.log.Warn("cannot end the worker's connection stream", "worker", p.slot.id, "pid", p.pid, "err", err)
	}
	if err := p.c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		m.log.Warn("cannot signal worker", "worker", p.slot.id, "pid", p.pid, "err", err)
	}
}

func (m *master) kill(p *proc) {
	p.killed = true
	m.disp.remove(p.c.conns)
	m.admin.remove(p)
	if err := p.c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		m.log.Warn("cannot kill worker", "worker", p.slot.id, "pid", p.pid, "err", err)
	}
}

// nextDeadline returns the earliest time tick has something to do.
func (m *master) nextDeadline() (time.Time, bool) {
	var at time.Time
	earlier := func(t time.Time) {
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	for _, s := range m.slots {
		if !s.restartAt.IsZero() {
			earlier(s.restartAt)
		}
	}
	for p := range m.procs {
		switch {
		case p.killed:
		case p.stop:
			earlier(p.killAt)
		case !p.ready:
			earlier(p.readyBy)
		}
	}
	return at, !at.IsZero()
}

// tick starts the restarts that are due and kills the processes that
// overran their deadline.
func (m *master) tick(now time.Time) {
	for _, s := range m.slots {
		if s.restartAt.IsZero() || now.Before(s.restartAt) {
			continue
		}
		s.restartAt = time.Time{}
		p, err := m.spawn(s)
		if err != nil {
			m.log.Error("cannot restart worker", "worker", s.id, "err", err)
			m.crashed(s, 0)
			m.checkAlive()
			continue
		}
		s.cur = p
	}
	for p := range m.procs {
		switch {
		case p.killed:
		case p.stop && !now.Before(p.killAt):
			m.log.Warn("worker did not stop in time; killing it", "worker", p.slot.id, "pid", p.pid)
			m.kill(p)
		case !p.stop && !p.ready && !now.Before(p.readyBy):
			m.log.Error("worker did not become ready in time; killing it", "worker", p.slot.id, "pid", p.pid, "timeout", readyTimeout)
			m.kill(p)
		}
	}
}

// exitStatus describes the result of exec.Cmd.Wait.
func exitStatus(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		return ee.ProcessState.String()
	default:
		return err.Error()
	}
}
