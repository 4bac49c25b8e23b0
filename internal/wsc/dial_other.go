//go:build !linux

package wsc

import (
	"errors"
	"syscall"
)

// control refuses what only the Linux socket options provide.
func control(bool, int) func(network, address string, rc syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error {
		return errors.New("wsc: a source address or receive buffer needs Linux")
	}
}
