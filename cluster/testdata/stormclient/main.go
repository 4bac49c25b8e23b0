// Command stormclient holds a share of the reconnect-storm test's
// WebSocket clients (TestReconnectStorm), in its own process so that the
// test's 20,000 clients fit the per-process limit on open files, and from
// its own loopback source address so that they do not run out of ports.
//
// It connects -n clients to -addr from -src, each subscribed to "news"
// and asked "whoami", answers every heartbeat, and then obeys the test,
// one command per line on stdin, answering each with one JSON line on
// stdout:
//
//	dropped ID     wait until every client on worker ID has lost its connection
//	storm          dial every client that lost its connection again, all at once;
//	               a failed dial is counted, not retried
//	expect DATA    wait until every connected client got a publish of DATA on "news"
//
// It exits at end of input, closing every connection.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterws/clusterws-go/internal/wsc"
)

// report is one answer on stdout.
type report struct {
	Event      string         `json:"event"`
	Clients    int            `json:"clients"`
	Workers    map[string]int `json:"workers,omitempty"`
	Errors     int            `json:"errors"`
	FirstError string         `json:"first_error,omitempty"`
	Unexpected int            `json:"unexpected"` // drops of clients of other workers
	TookMS     int64          `json:"took_ms"`
}

type conn struct {
	c      *wsc.Conn
	worker int
	gone   chan struct{} // closed when its reader ends
	got    atomic.Value  // string: the last publish on "news"
}

var (
	addr    = flag.String("addr", "", "the cluster, host:port")
	src     = flag.String("src", "127.0.0.1", "source address")
	n       = flag.Int("n", 100, "clients")
	timeout = flag.Duration("timeout", 2*time.Minute, "bound on every phase")
)

func main() {
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	conns := make([]*conn, *n)

	start := time.Now()
	errs, first := dialAll(conns, 64)
	workers := make(map[string]int)
	for _, c := range conns {
		if c != nil {
			workers[strconv.Itoa(c.worker)]++
		}
	}
	_ = out.Encode(report{Event: "ready", Clients: *n - errs, Workers: workers, Errors: errs, FirstError: first, TookMS: time.Since(start).Milliseconds()})

	var killed int
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		start := time.Now()
		switch cmd {
		case "dropped":
			killed, _ = strconv.Atoi(arg)
			// A context, not time.After: once past, Done stays closed
			// for every client left to wait for.
			ctx, cancel := context.WithTimeout(context.Background(), *timeout)
			k, unexpected := 0, 0
			for _, c := range conns {
				if c == nil || c.worker != killed {
					continue
				}
				select {
				case <-c.gone:
					k++
				case <-ctx.Done():
				}
			}
			cancel()
			for _, c := range conns {
				if c != nil && c.worker != killed && closed(c.gone) {
					unexpected++
				}
			}
			_ = out.Encode(report{Event: "dropped", Clients: k, Unexpected: unexpected, TookMS: time.Since(start).Milliseconds()})
		case "storm":
			var redial []int
			for i, c := range conns {
				if c != nil && closed(c.gone) {
					c.c.Close()
					redial = append(redial, i)
				}
			}
			// Every one at once: no limit on concurrency.
			errs, first := dialSome(conns, redial)
			_ = out.Encode(report{Event: "storm", Clients: len(redial) - errs, Errors: errs, FirstError: first, TookMS: time.Since(start).Milliseconds()})
		case "expect":
			deadline := time.Now().Add(*timeout)
			k := 0
			for _, c := range conns {
				if c == nil {
					continue
				}
				for c.got.Load() != arg && time.Now().Before(deadline) && !closed(c.gone) {
					time.Sleep(5 * time.Millisecond) // polling: the test's deadline bounds it
				}
				if c.got.Load() == arg {
					k++
				}
			}
			unexpected := 0
			for _, c := range conns {
				if c != nil && closed(c.gone) {
					unexpected++
				}
			}
			_ = out.Encode(report{Event: "expect", Clients: k, Unexpected: unexpected, TookMS: time.Since(start).Milliseconds()})
		}
	}
	for _, c := range conns {
		if c != nil {
			c.c.Close()
		}
	}
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// dialAll dials every client with par dials at a time.
func dialAll(conns []*conn, par int) (errs int, first string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	for range par {
		wg.Go(func() {
			for i := range work {
				c, err := dial()
				mu.Lock()
				if err != nil {
					if errs == 0 {
						first = err.Error()
					}
					errs++
				}
				conns[i] = c
				mu.Unlock()
			}
		})
	}
	for i := range conns {
		work <- i
	}
	close(work)
	wg.Wait()
	return errs, first
}

// dialSome dials conns[i] again for each i in idx, all at the same
// moment; a client whose dial failed is left out (nil).
func dialSome(conns []*conn, idx []int) (errs int, first string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for _, i := range idx {
		wg.Go(func() {
			<-gate
			c, err := dial()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if errs == 0 {
					first = err.Error()
				}
				errs++
			}
			conns[i] = c
		})
	}
	close(gate)
	wg.Wait()
	return errs, first
}

// dial connects one client, subscribes it to "news" and learns its
// worker; the answer to whoami comes after the subscription is in place.
func dial() (*conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := wsc.Dial(ctx, *addr, "/ws", net.ParseIP(*src))
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*conn, error) {
		c.Close()
		return nil, err
	}
	if _, _, err := c.ReadMessage(); err != nil { // the config frame
		return fail(fmt.Errorf("config frame: %w", err))
	}
	if err := c.WriteMessage(wsc.OpText, []byte(`{"#":["s","s","news"]}`)); err != nil {
		return fail(err)
	}
	if err := c.WriteMessage(wsc.OpText, []byte(`{"#":["e","whoami",null]}`)); err != nil {
		return fail(err)
	}
	cc := &conn{c: c, gone: make(chan struct{})}
	cc.got.Store("")
	for cc.worker == 0 {
		op, msg, err := c.ReadMessage()
		if err != nil {
			return fail(fmt.Errorf("whoami: %w", err))
		}
		if op == wsc.OpBinary && len(msg) == 1 && msg[0] == '9' {
			_ = c.WriteMessage(wsc.OpBinary, []byte{'A'})
			continue
		}
		var f struct {
			Hash []json.RawMessage `json:"#"`
		}
		if json.Unmarshal(msg, &f) == nil && len(f.Hash) == 3 && string(f.Hash[1]) == `"whoami"` {
			var id struct{ ID int }
			_ = json.Unmarshal(f.Hash[2], &id)
			cc.worker = id.ID
		}
	}
	_ = c.SetDeadline(time.Time{})
	go cc.read()
	return cc, nil
}

// read answers heartbeats and records publishes until the connection
// ends; the process's end, or Close, stops it.
func (c *conn) read() {
	defer close(c.gone)
	for {
		op, msg, err := c.c.ReadMessage()
		if err != nil {
			return
		}
		if op == wsc.OpBinary && len(msg) == 1 && msg[0] == '9' {
			_ = c.c.WriteMessage(wsc.OpBinary, []byte{'A'})
			continue
		}
		var f struct {
			Hash []json.RawMessage `json:"#"`
		}
		if json.Unmarshal(msg, &f) == nil && len(f.Hash) == 3 && string(f.Hash[0]) == `"p"` && string(f.Hash[1]) == `"news"` {
			var s string
			_ = json.Unmarshal(f.Hash[2], &s)
			c.got.Store(s)
		}
	}
}
