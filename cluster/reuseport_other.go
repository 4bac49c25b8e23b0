//go:build unix && !linux

package cluster

import (
	"errors"
	"net"
)

// Config.ReusePort is Linux only: Config validation refuses it elsewhere,
// so none of these is reached.

var errNoReusePort = errors.New("cluster: ReusePort needs Linux")

type reservation struct{}

func reservePort(string, int) (*reservation, error) { return nil, errNoReusePort }

func (*reservation) Addr() net.Addr { return nil }
func (*reservation) Close()         {}

type reuseListener struct{ net.Listener }

func listenReusePort(string) (*reuseListener, error) { return nil, errNoReusePort }

func (l *reuseListener) drain() { l.Close() }
