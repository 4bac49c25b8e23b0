//go:build !linux

package wsconn

import "errors"

// PollerSupported reports whether NewPoller works here.
const PollerSupported = false

// Poller is Linux-only (epoll); NewPoller fails elsewhere.
type Poller struct{}

// errNoPoller is NewPoller's error off Linux.
var errNoPoller = errors.New("wsconn: the idle poller needs Linux")

// NewPoller fails off Linux.
func NewPoller() (*Poller, error) { return nil, errNoPoller }

// Close does nothing.
func (p *Poller) Close() error { return nil }

func (p *Poller) arm(int, *Conn) error { return errNoPoller }
func (p *Poller) remove(int)           {}
func (p *Poller) forget(int, *Conn)    {}
