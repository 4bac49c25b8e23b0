package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// Frame kinds, the first element of every frame.
const (
	KindEvent   = 'e' // {"#":["e",event,data]}
	KindPublish = 'p' // {"#":["p",channel,data]}
	KindSystem  = 's' // {"#":["s","s"|"u"|"c",data]}
)

// System frame names, the second element of a KindSystem frame.
const (
	SystemSubscribe   = "s"
	SystemUnsubscribe = "u"
	SystemConfig      = "c"
)

// Heartbeat frames.
var (
	Ping       = []byte{'9'} // binary frame, server to client
	Pong       = []byte{'A'} // binary frame, client to server
	LegacyPing = []byte("#0")
	LegacyPong = []byte("#1")
)

// Decoding errors. All of them mean "ignore this frame".
var (
	ErrMalformed   = errors.New("protocol: malformed JSON frame")
	ErrShape       = errors.New(`protocol: frame is not {"#":[kind,name,data]}`)
	ErrUnknownKind = errors.New("protocol: unknown frame kind")
)

// Encoding errors.
var (
	ErrInvalidJSON = errors.New("protocol: json.RawMessage is not valid JSON")
	ErrInvalidUTF8 = errors.New("protocol: json.RawMessage is not valid UTF-8")
)

// Message is one decoded application frame.
type Message struct {
	Kind byte   // KindEvent, KindPublish or KindSystem
	Name string // event, channel, or system name
	// Data is the raw JSON value of the third element; it aliases the input.
	Data json.RawMessage
	// Position is the fourth element of a publish on a channel with
	// history (HasPosition).
	Position    Position
	HasPosition bool
}

// Decode parses one client frame. legacy selects the seed-era "m" key.
// Data in the result aliases b.
func Decode(b []byte, legacy bool) (Message, error) {
	var m Message
	p := parser{b: b}
	p.ws()
	if !p.take('{') {
		return m, p.fail()
	}
	p.ws()
	key, ok := p.str()
	if !ok {
		return m, p.fail()
	}
	if key != envelopeKey(legacy) {
		return m, ErrShape
	}
	p.ws()
	if !p.take(':') {
		return m, p.fail()
	}
	p.ws()
	if !p.take('[') {
		return m, p.fail()
	}
	p.ws()
	kind, ok := p.str()
	if !ok {
		return m, p.fail()
	}
	p.ws()
	if !p.take(',') {
		return m, p.fail()
	}
	p.ws()
	name, ok := p.str()
	if !ok {
		return m, p.fail()
	}
	p.ws()
	// The data value runs from here to the closing "]}" at the very end.
	end := len(b)
	for end > p.i && isWS(b[end-1]) {
		end--
	}
	if end <= p.i || b[end-1] != '}' {
		return m, p.fail()
	}
	end--
	for end > p.i && isWS(b[end-1]) {
		end--
	}
	if end <= p.i || b[end-1] != ']' {
		return m, p.fail()
	}
	end--
	if p.i == end {
		m.Data = json.RawMessage("null") // ["e","name"] with no data
	} else {
		if !p.take(',') {
			return m, p.fail()
		}
		data := bytes.TrimSpace(b[p.i:end])
		if !json.Valid(data) {
			// A publish of a channel with history carries its position
			// as a fourth element.
			rest, pos, ok := cutPosition(data)
			if !ok || !json.Valid(rest) {
				return m, p.fail()
			}
			data, m.Position, m.HasPosition = rest, pos, true
		}
		m.Data = data
	}
	if len(kind) != 1 {
		return m, ErrUnknownKind
	}
	switch kind[0] {
	case KindEvent, KindPublish, KindSystem:
	default:
		return m, ErrUnknownKind
	}
	m.Kind, m.Name = kind[0], name
	return m, nil
}

// DecodeString decodes a JSON string value such as the data of a subscribe
// frame.
func DecodeString(data []byte) (string, bool) {
	p := parser{b: data}
	p.ws()
	s, ok := p.str()
	if !ok {
		return "", false
	}
	p.ws()
	return s, p.i == len(data)
}

type parser struct {
	b []byte
	i int
}

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (p *parser) ws() {
	for p.i < len(p.b) && isWS(p.b[p.i]) {
		p.i++
	}
}

func (p *parser) take(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// fail classifies a parse failure: input that is valid JSON has the wrong
// shape; anything else is malformed.
func (p *parser) fail() error {
	if json.Valid(p.b) {
		return ErrShape
	}
	return ErrMalformed
}

// str reads a JSON string. Strings without escapes are sliced, not parsed.
func (p *parser) str() (string, bool) {
	if !p.take('"') {
		return "", false
	}
	start, escaped := p.i, false
	for p.i < len(p.b) {
		switch c := p.b[p.i]; {
		case c == '"':
			raw := p.b[start:p.i]
			p.i++
			if !escaped {
				if !utf8.Valid(raw) {
					return "", false
				}
				return string(raw), true
			}
			var s string
			if json.Unmarshal(p.b[start-1:p.i], &s) != nil {
				return "", false
			}
			return s, true
		case c == '\\':
			escaped = true
			p.i += 2
		case c < 0x20:
			return "", false
		default:
			p.i++
		}
	}
	return "", false
}

// FromLatin1 converts b from Latin-1 to UTF-8. The ClusterWS JavaScript
// client in binary mode sends one byte per UTF-16 code unit, so a binary
// frame that is not valid UTF-8 is read as Latin-1.
func FromLatin1(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/4)
	for _, c := range b {
		out = utf8.AppendRune(out, rune(c))
	}
	return out
}
