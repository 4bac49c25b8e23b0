//go:build !linux

package localbroker

import (
	"errors"
	"net"
)

// inlineWriter is Linux only: elsewhere every frame goes through the
// writer goroutine.
type inlineWriter struct{}

func newInlineWriter(net.Conn) *inlineWriter { return nil }

func (*inlineWriter) write([][]byte) (int, error) {
	return 0, errors.New("localbroker: no inline writes here")
}
