package proto

import (
	"bytes"
	"strconv"
)

// Payload is what a load-generator message carries: the send time, the
// publisher and its sequence number, padded to a fixed size. Its JSON form
// is {"t":<unix ns>,"i":<publisher>,"s":<seq>,"p":"xxx…"}, always with the
// fields in that order, so that a reader finds them without a JSON parser.
type Payload struct {
	T   int64 // UnixNano at send
	Pub int   // publisher index
	Seq int64 // 1, 2, 3… per publisher
}

var pad = bytes.Repeat([]byte("x"), 64<<10)

// AppendPayload appends p as a JSON object of exactly size bytes, or the
// shortest it can be when size is smaller than that.
func AppendPayload(dst []byte, p Payload, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"t":`...)
	dst = strconv.AppendInt(dst, p.T, 10)
	dst = append(dst, `,"i":`...)
	dst = strconv.AppendInt(dst, int64(p.Pub), 10)
	dst = append(dst, `,"s":`...)
	dst = strconv.AppendInt(dst, p.Seq, 10)
	dst = append(dst, `,"p":"`...)
	n := size - (len(dst) - start) - 2
	if n > 0 {
		dst = append(dst, pad[:n]...)
	}
	return append(dst, `"}`...)
}

// ParsePayload reads a payload from the start of b (trailing bytes are
// ignored). ok is false when b does not start with one.
func ParsePayload(b []byte) (p Payload, ok bool) {
	var rest []byte
	if p.T, rest, ok = field(b, `{"t":`); !ok {
		return p, false
	}
	var pub int64
	if pub, rest, ok = field(rest, `,"i":`); !ok {
		return p, false
	}
	p.Pub = int(pub)
	if p.Seq, _, ok = field(rest, `,"s":`); !ok {
		return p, false
	}
	return p, true
}

func field(b []byte, prefix string) (int64, []byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return 0, nil, false
	}
	b = b[len(prefix):]
	var v int64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		v = v*10 + int64(b[i]-'0')
	}
	if i == 0 {
		return 0, nil, false
	}
	return v, b[i:], true
}
