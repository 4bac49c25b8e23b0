package wsconn

import (
	"compress/flate"
	"sync"
)

// deflateTail ends every flush of a DEFLATE stream (an empty stored
// block); RFC 7692 section 7.2.1 has the sender remove it and the receiver
// add it back.
const deflateTail = "\x00\x00\xff\xff"

// deflater is a flate.Writer with the buffer it writes to. Writers are
// large (about 1 MB at level 1, a few hundred KB more above), so they are
// pooled per level and held only while one message is compressed: memory
// grows with the messages compressed at once, not with connections.
type deflater struct {
	fw  *flate.Writer
	out sliceWriter
}

type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// deflaters holds pools for the levels flate.BestSpeed to
// flate.BestCompression.
var deflaters [flate.BestCompression + 1]sync.Pool

// Deflate returns msg compressed as the payload of a permessage-deflate
// message without context takeover (RFC 7692): raw DEFLATE, flushed, with
// the trailing 0x00 0x00 0xff 0xff removed, in a slice of its own. It
// returns ok false, and nothing, when compressing would not save at least
// one byte: the message is then better sent as it is (the RFC lets the
// sender choose per message). level is flate.BestSpeed (1) to
// flate.BestCompression (9); other values panic. Safe for concurrent use.
func Deflate(msg []byte, level int) (out []byte, ok bool) {
	if level < flate.BestSpeed || level > flate.BestCompression {
		panic("wsconn: Deflate level out of range")
	}
	p := &deflaters[level]
	d, _ := p.Get().(*deflater)
	if d == nil {
		d = &deflater{}
		d.fw, _ = flate.NewWriter(&d.out, level) // only the level can fail
	} else {
		d.fw.Reset(&d.out)
	}
	if cap(d.out.b) < len(msg)+64 {
		d.out.b = make([]byte, 0, len(msg)+64)
	}
	d.out.b = d.out.b[:0]
	_, _ = d.fw.Write(msg) // writes to memory do not fail
	_ = d.fw.Flush()
	b := d.out.b
	if n := len(b) - len(deflateTail); n >= 0 && string(b[n:]) == deflateTail {
		b = b[:n]
	}
	if len(b) < len(msg) {
		out, ok = append([]byte(nil), b...), true
	}
	if cap(d.out.b) > 256<<10 {
		d.out.b = nil // one large message must not pin its buffer
	}
	p.Put(d)
	return out, ok
}
