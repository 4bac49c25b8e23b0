package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

// oddNames are channel and event names that must survive encoding and
// decoding unchanged: JSON and JavaScript specials, property names that
// bite naive JavaScript objects, whitespace, and characters outside the BMP.
var oddNames = []string{
	"", "%", "[", "]", "{}", ",", ":", "\"", "\\", "/", "#", "#0", "]}", `"]}`,
	"__proto__", "constructor", "length", "toString", "hasOwnProperty", "0", "-1", "1e3",
	" ", "  leading and trailing  ", "a b", "\t", "\n", "\r\n", "\x00", "\x01", "\x1f", "\x7f",
	"é", "ünïcødé", "日本語", "😀", "👍🏽", "a😀b", "\U0010FFFF", "\uFFFD", "\uFEFF", "\u00a0",
	"\u2028", "\u2029", "a\u2028b\u2029c", "<script>&amp;</script>", "x\u0025", `\u0025`,
	"null", "true", "[1,2]",
}

// stdFrame decodes b with encoding/json the way a JavaScript client would
// see it: JSON.parse(b)[key] must be an array [kind, name, data?].
func stdFrame(b []byte, key string) (kind, name string, data json.RawMessage, ok bool) {
	var env map[string]json.RawMessage
	if json.Unmarshal(b, &env) != nil || len(env) != 1 {
		return "", "", nil, false
	}
	raw, found := env[key]
	if !found {
		return "", "", nil, false
	}
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil || len(parts) < 2 || len(parts) > 3 {
		return "", "", nil, false
	}
	if !isJSONString(parts[0]) || !isJSONString(parts[1]) {
		return "", "", nil, false
	}
	if json.Unmarshal(parts[0], &kind) != nil || json.Unmarshal(parts[1], &name) != nil {
		return "", "", nil, false
	}
	data = json.RawMessage("null")
	if len(parts) == 3 {
		data = parts[2]
	}
	return kind, name, data, true
}

func isJSONString(raw json.RawMessage) bool {
	return len(raw) > 0 && raw[0] == '"'
}

// jsonEqual reports whether a and b are the same JSON value. Numbers are
// compared by their text, so values beyond float64 (1e999) compare too.
func jsonEqual(a, b []byte) bool {
	va, erra := decodeAny(a)
	vb, errb := decodeAny(b)
	if erra != nil || errb != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

func decodeAny(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("trailing data")
	}
	return v, nil
}

// stdString is s as a JavaScript client receives it: encoding/json's
// replacement of each invalid UTF-8 byte with U+FFFD.
func stdString(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func isDecodeError(err error) bool {
	return errors.Is(err, protocol.ErrMalformed) || errors.Is(err, protocol.ErrShape) ||
		errors.Is(err, protocol.ErrUnknownKind)
}

func envelopeKey(legacy bool) string {
	if legacy {
		return "m"
	}
	return "#"
}
