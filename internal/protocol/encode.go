package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"unicode/utf8"
)

// Encoder builds server-to-client frames. The zero value encodes the 3.x
// dialect for text mode.
type Encoder struct {
	// ASCII escapes every non-ASCII character as \uXXXX. Binary mode needs
	// it: the JavaScript client decodes binary frames one byte per character.
	ASCII bool
	// Legacy selects the seed-era "m" envelope key.
	Legacy bool
}

func envelopeKey(legacy bool) string {
	if legacy {
		return "m"
	}
	return "#"
}

// AppendFrame appends {"#":[kind,name,data]} to dst. data must be one valid
// JSON value in UTF-8, as AppendValue produces, or as Decode returns from
// valid UTF-8 input.
func (e Encoder) AppendFrame(dst []byte, kind byte, name string, data []byte) []byte {
	dst = append(dst, `{"`...)
	dst = append(dst, envelopeKey(e.Legacy)...)
	dst = append(dst, `":["`...)
	dst = append(dst, kind)
	dst = append(dst, `",`...)
	dst = e.appendString(dst, name)
	dst = append(dst, ',')
	if e.ASCII {
		dst = appendASCII(dst, data)
	} else {
		dst = append(dst, data...)
	}
	return append(dst, "]}"...)
}

// Encode encodes data, any JSON-encodable value (a json.RawMessage is
// validated and sent as is), into a new frame.
func (e Encoder) Encode(kind byte, name string, data any) ([]byte, error) {
	raw, err := AppendValue(nil, data)
	if err != nil {
		return nil, err
	}
	return e.AppendFrame(make([]byte, 0, len(raw)+len(name)+16), kind, name, raw), nil
}

// Config returns the first frame of every connection:
// {"#":["s","c",{"ping":<ms>,"binary":<bool>}]}. With ext it adds
// "protocol":"clusterws.v2": the server speaks the extension on this
// connection. A client trusts the extension only with both the selected
// subprotocol and this member, since some servers echo any offered
// subprotocol.
func (e Encoder) Config(pingMillis int64, binary, ext bool) []byte {
	data := []byte(`{"ping":`)
	data = strconv.AppendInt(data, pingMillis, 10)
	data = append(data, `,"binary":`...)
	data = strconv.AppendBool(data, binary)
	if ext {
		data = append(data, `,"protocol":"`+Subprotocol+`"`...)
	}
	data = append(data, '}')
	return e.AppendFrame(nil, KindSystem, SystemConfig, data)
}

// Ping returns the heartbeat frame of the dialect and whether it is sent as
// a binary frame.
func (e Encoder) Ping() (frame []byte, binary bool) {
	if e.Legacy {
		return LegacyPing, false
	}
	return Ping, true
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// AppendValue appends v encoded as JSON (encoding/json rules, without HTML
// escaping) to dst. A json.RawMessage is validated and copied as is.
func AppendValue(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case string:
		return Encoder{}.appendString(dst, v), nil
	case json.RawMessage:
		if v == nil {
			return append(dst, "null"...), nil // as encoding/json does
		}
		if !json.Valid(v) {
			return dst, ErrInvalidJSON
		}
		if !utf8.Valid(v) {
			return dst, ErrInvalidUTF8
		}
		return append(dst, bytes.TrimSpace(v)...), nil
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return dst, err
	}
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...), nil
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func (e Encoder) appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = appendEscapedRune(dst, utf8.RuneError, e.ASCII)
			i += size
			start = i
			continue
		}
		if e.ASCII || r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = appendEscapedRune(dst, r, true)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendEscapedRune(dst []byte, r rune, escape bool) []byte {
	if !escape {
		return utf8.AppendRune(dst, r)
	}
	if r > 0xFFFF {
		r -= 0x10000
		dst = appendU(dst, 0xD800+(r>>10))
		return appendU(dst, 0xDC00+(r&0x3FF))
	}
	return appendU(dst, r)
}

func appendU(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
}

// appendASCII copies valid JSON, escaping non-ASCII characters. In JSON they
// can only occur inside strings, where \uXXXX means the same character.
func appendASCII(dst, data []byte) []byte {
	start := 0
	for i := 0; i < len(data); {
		if data[i] < utf8.RuneSelf {
			i++
			continue
		}
		dst = append(dst, data[start:i]...)
		r, size := utf8.DecodeRune(data[i:])
		dst = appendEscapedRune(dst, r, true)
		i += size
		start = i
	}
	return append(dst, data[start:]...)
}
