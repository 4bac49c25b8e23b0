// Package proto holds the two wire protocols the load generator speaks:
// ClusterWS 3.x ({"#":[kind,name,data]} in text frames, binary '9'/'A'
// heartbeats), spoken by clusterws-go and the original Node ClusterWS, and
// Centrifuge's JSON protocol (newline-delimited commands and replies,
// server pings as "{}").
//
// Both are written by hand against the exact bytes the servers send, for
// speed: the load generator must cost the machine much less than the
// servers it measures.
package proto

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/clusterws/clusterws-go/internal/wsc"
)

// Kind of a message from the server.
type Kind int

// Kinds.
const (
	KindOther   Kind = iota
	KindPublish      // a publication: Channel and Data set
	KindReply        // a reply to a request of ours (echo, whoami, connect, subscribe): ID and Data set
	KindReady        // the server's greeting: ClusterWS's configuration frame
)

// Msg is one message from the server; its slices alias the read buffer.
type Msg struct {
	Kind    Kind
	ID      uint32 // KindReply: the request's id (Centrifuge); 0 for ClusterWS events
	Name    []byte // KindReply from ClusterWS: the event name
	Channel []byte
	Data    []byte // the data, possibly followed by more JSON (Centrifuge)
	Err     bool   // KindReply: the server answered with an error
}

// Protocol encodes client messages and decodes server ones.
type Protocol interface {
	Name() string
	// Path is the WebSocket endpoint's URL path.
	Path() string
	// Hello returns the frame to send right after the upgrade, and the id
	// of the reply to wait for; nil when the server greets first
	// (ClusterWS: wait for KindReady).
	Hello() ([]byte, uint32)
	// AppendSubscribe appends a framed subscribe request.
	AppendSubscribe(dst []byte, channel string, id uint32) []byte
	// AppendPublish appends a framed client publish of data to channel.
	// ClusterWS honours it only from a subscriber of the channel.
	AppendPublish(dst []byte, channel string, data []byte, id uint32) []byte
	// AppendRelay appends a request that makes the server publish data to
	// any channel (ClusterWS: the benchmark servers' "pub" event;
	// Centrifuge: a plain publish).
	AppendRelay(dst []byte, channel string, data []byte, id uint32) []byte
	// AppendCall appends a request answered with a reply: method "echo"
	// (returns data) or "whoami" (returns the server process's PID).
	AppendCall(dst []byte, method string, data []byte, id uint32) []byte
	// Parse calls fn for each message in one WebSocket message and
	// returns a frame to write back (a heartbeat answer), if any.
	Parse(op byte, b []byte, fn func(*Msg)) (reply []byte, err error)
	// ReplyID reports the id carried by a reply to AppendCall with id,
	// for protocols without request ids (ClusterWS): 0.
	ReplyID(id uint32) uint32
}

// ByName returns the protocol named name: "clusterws" or "centrifuge".
func ByName(name string) (Protocol, error) {
	switch name {
	case "clusterws":
		return ClusterWS{}, nil
	case "centrifuge":
		return Centrifuge{}, nil
	}
	return nil, fmt.Errorf("proto: unknown protocol %q", name)
}

// ClusterWS is the ClusterWS 3.x protocol.
type ClusterWS struct{}

func (ClusterWS) Name() string            { return "clusterws" }
func (ClusterWS) Path() string            { return "/ws" }
func (ClusterWS) Hello() ([]byte, uint32) { return nil, 0 }
func (ClusterWS) ReplyID(uint32) uint32   { return 0 }

func (ClusterWS) AppendSubscribe(dst []byte, channel string, _ uint32) []byte {
	return text(dst, func(b []byte) []byte {
		b = append(b, `{"#":["s","s",`...)
		b = strconv.AppendQuote(b, channel)
		return append(b, "]}"...)
	})
}

func (ClusterWS) AppendPublish(dst []byte, channel string, data []byte, _ uint32) []byte {
	return cws(dst, 'p', channel, data)
}

func (ClusterWS) AppendRelay(dst []byte, channel string, data []byte, _ uint32) []byte {
	return text(dst, func(b []byte) []byte {
		b = append(b, `{"#":["e","pub",{"c":`...)
		b = strconv.AppendQuote(b, channel)
		b = append(b, `,"d":`...)
		b = append(b, data...)
		return append(b, "}]}"...)
	})
}

func (ClusterWS) AppendCall(dst []byte, method string, data []byte, _ uint32) []byte {
	return cws(dst, 'e', method, orNull(data))
}

// cws frames {"#":[kind,name,data]}.
func cws(dst []byte, kind byte, name string, data []byte) []byte {
	return text(dst, func(b []byte) []byte {
		b = append(b, `{"#":["`...)
		b = append(b, kind, '"', ',')
		b = strconv.AppendQuote(b, name)
		b = append(b, ',')
		b = append(b, data...)
		return append(b, "]}"...)
	})
}

var (
	cwsPing = []byte{'9'}
	cwsPong = wsc.AppendFrame(nil, wsc.OpBinary, []byte{'A'})
)

// Parse decodes {"#":["p","chan",data]}, {"#":["e","name",data]} and
// {"#":["s","c",…]}; channel and event names never need unescaping here.
func (ClusterWS) Parse(op byte, b []byte, fn func(*Msg)) ([]byte, error) {
	if op == wsc.OpBinary && bytes.Equal(b, cwsPing) {
		return cwsPong, nil
	}
	const head = `{"#":["`
	if len(b) < len(head)+6 || string(b[:len(head)]) != head || b[len(head)+1] != '"' || b[len(head)+2] != ',' ||
		b[len(head)+3] != '"' {
		return nil, fmt.Errorf("proto: unexpected ClusterWS frame %.80q", b)
	}
	kind := b[len(head)]
	rest := b[len(head)+4:]
	end := bytes.IndexByte(rest, '"')
	if end < 0 || end+2 > len(rest) {
		return nil, fmt.Errorf("proto: unexpected ClusterWS frame %.80q", b)
	}
	name, data := rest[:end], rest[end+2:]
	if n := len(data); n >= 2 && data[n-2] == ']' && data[n-1] == '}' {
		data = data[:n-2]
	}
	var m Msg
	switch kind {
	case 'p':
		m = Msg{Kind: KindPublish, Channel: name, Data: data}
	case 'e':
		m = Msg{Kind: KindReply, Name: name, Data: data}
	case 's':
		m = Msg{Kind: KindReady, Name: name, Data: data}
	default:
		m = Msg{Kind: KindOther, Name: name, Data: data}
	}
	fn(&m)
	return nil, nil
}

// Centrifuge is Centrifuge's JSON protocol (client protocol v2).
type Centrifuge struct{}

func (Centrifuge) Name() string { return "centrifuge" }
func (Centrifuge) Path() string { return "/connection/websocket" }
func (Centrifuge) Hello() ([]byte, uint32) {
	return text(nil, func(b []byte) []byte { return append(b, `{"id":1,"connect":{}}`...) }), 1
}
func (Centrifuge) ReplyID(id uint32) uint32 { return id }

func (Centrifuge) AppendSubscribe(dst []byte, channel string, id uint32) []byte {
	return command(dst, id, "subscribe", "channel", channel, nil)
}

func (Centrifuge) AppendPublish(dst []byte, channel string, data []byte, id uint32) []byte {
	return command(dst, id, "publish", "channel", channel, data)
}

func (c Centrifuge) AppendRelay(dst []byte, channel string, data []byte, id uint32) []byte {
	return c.AppendPublish(dst, channel, data, id)
}

func (Centrifuge) AppendCall(dst []byte, method string, data []byte, id uint32) []byte {
	return command(dst, id, "rpc", "method", method, orNull(data))
}

// command frames {"id":id,"cmd":{"key":value,"data":data}}, without
// "data" when data is nil.
func command(dst []byte, id uint32, cmd, key, value string, data []byte) []byte {
	return text(dst, func(b []byte) []byte {
		b = append(b, `{"id":`...)
		b = strconv.AppendUint(b, uint64(id), 10)
		b = append(b, `,"`...)
		b = append(b, cmd...)
		b = append(b, `":{"`...)
		b = append(b, key...)
		b = append(b, `":`...)
		b = strconv.AppendQuote(b, value)
		if data != nil {
			b = append(b, `,"data":`...)
			b = append(b, data...)
		}
		return append(b, "}}"...)
	})
}

// orNull returns data, or the JSON null for nil.
func orNull(data []byte) []byte {
	if data == nil {
		return []byte("null")
	}
	return data
}

var cfPong = wsc.AppendFrame(nil, wsc.OpText, []byte("{}"))

// Parse splits the newline-delimited replies and pushes of one frame.
func (Centrifuge) Parse(_ byte, b []byte, fn func(*Msg)) ([]byte, error) {
	var reply []byte
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) == 0 {
			continue
		}
		if string(line) == "{}" {
			reply = cfPong
			continue
		}
		const push = `{"push":{"channel":"`
		if bytes.HasPrefix(line, []byte(push)) {
			rest := line[len(push):]
			end := bytes.IndexByte(rest, '"')
			if end < 0 {
				return reply, fmt.Errorf("proto: unexpected Centrifuge push %.80q", line)
			}
			m := Msg{Kind: KindPublish, Channel: rest[:end]}
			if i := bytes.Index(rest, []byte(`"data":`)); i >= 0 {
				m.Data = rest[i+len(`"data":`):]
			} else {
				m.Kind = KindOther // join, leave, unsubscribe…
			}
			fn(&m)
			continue
		}
		const idp = `{"id":`
		if bytes.HasPrefix(line, []byte(idp)) {
			v, rest, ok := number(line[len(idp):])
			if !ok {
				return reply, fmt.Errorf("proto: unexpected Centrifuge reply %.80q", line)
			}
			m := Msg{Kind: KindReply, ID: uint32(v)}
			m.Err = bytes.HasPrefix(rest, []byte(`,"error"`))
			if i := bytes.Index(rest, []byte(`"data":`)); i >= 0 {
				m.Data = rest[i+len(`"data":`):]
			}
			fn(&m)
			continue
		}
		m := Msg{Kind: KindOther, Data: line}
		fn(&m)
	}
	return reply, nil
}

func number(b []byte) (uint64, []byte, bool) {
	var v uint64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		v = v*10 + uint64(b[i]-'0')
	}
	return v, b[i:], i > 0
}

// text frames what build appends as one masked text frame.
func text(dst []byte, build func([]byte) []byte) []byte {
	var scratch [2048]byte
	p := build(scratch[:0])
	return wsc.AppendFrame(dst, wsc.OpText, p)
}
