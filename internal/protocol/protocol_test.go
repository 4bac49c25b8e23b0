package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

// errAny marks table rows where any decoding error is acceptable: the
// frame must be refused, but which class it falls in is not the contract.
var errAny = errors.New("any decoding error")

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		legacy bool
		kind   byte
		ename  string // expected Name
		data   string // expected Data, byte for byte
		err    error
	}{
		// Valid frames.
		{name: "event", in: `{"#":["e","chat","hi"]}`, kind: 'e', ename: "chat", data: `"hi"`},
		{name: "publish", in: `{"#":["p","news",{"a":1}]}`, kind: 'p', ename: "news", data: `{"a":1}`},
		{name: "subscribe", in: `{"#":["s","s","bench"]}`, kind: 's', ename: "s", data: `"bench"`},
		{name: "unsubscribe", in: `{"#":["s","u","bench"]}`, kind: 's', ename: "u", data: `"bench"`},
		{name: "config kind", in: `{"#":["s","c",{"ping":20000,"binary":false}]}`, kind: 's', ename: "c",
			data: `{"ping":20000,"binary":false}`},
		{name: "whitespace everywhere", in: " \t\r\n{ \"#\" :\n[ \"p\" ,\t\"news\" , {\"a\": [1, 2]} ] }\r\n",
			kind: 'p', ename: "news", data: `{"a": [1, 2]}`},
		{name: "whitespace around data", in: `{"#":["e","a",   1   ]}`, kind: 'e', ename: "a", data: `1`},
		{name: "escape in name", in: `{"#":["e","x\u0025",1]}`, kind: 'e', ename: "x%", data: `1`},
		{name: "all short escapes in name", in: `{"#":["e","\"\\\/\b\f\n\r\t",1]}`, kind: 'e',
			ename: "\"\\/\b\f\n\r\t", data: `1`},
		{name: "surrogate pair escape", in: `{"#":["e","\ud83d\ude00",1]}`, kind: 'e', ename: "😀", data: `1`},
		{name: "upper-case hex escape", in: `{"#":["e","\u00E9",1]}`, kind: 'e', ename: "é", data: `1`},
		{name: "escaped control char", in: `{"#":["e","\u0001",1]}`, kind: 'e', ename: "\x01", data: `1`},
		// A lone surrogate becomes U+FFFD, as in encoding/json.
		{name: "lone surrogate escape", in: `{"#":["e","\ud800",1]}`, kind: 'e', ename: "\uFFFD", data: `1`},
		{name: "raw UTF-8 name", in: `{"#":["e","ünïcødé 😀",1]}`, kind: 'e', ename: "ünïcødé 😀", data: `1`},
		{name: "escaped key", in: `{"\u0023":["e","a",1]}`, kind: 'e', ename: "a", data: `1`},
		{name: "escaped kind", in: `{"#":["\u0065","a",1]}`, kind: 'e', ename: "a", data: `1`},
		{name: "missing data", in: `{"#":["e","ping"]}`, kind: 'e', ename: "ping", data: `null`},
		{name: "missing data with spaces", in: `{"#":[ "e" , "ping" ] }`, kind: 'e', ename: "ping", data: `null`},
		{name: "explicit null", in: `{"#":["e","a",null]}`, kind: 'e', ename: "a", data: `null`},
		{name: "empty name", in: `{"#":["e","",1]}`, kind: 'e', ename: "", data: `1`},
		{name: "string data with ]}", in: `{"#":["e","a","]}"]}`, kind: 'e', ename: "a", data: `"]}"`},
		{name: "nested data ending in ]}", in: `{"#":["e","a",{"b":[{"c":[]}]}]}`, kind: 'e', ename: "a",
			data: `{"b":[{"c":[]}]}`},
		{name: "array data", in: `{"#":["e","a",[1,"2",[3]]]}`, kind: 'e', ename: "a", data: `[1,"2",[3]]`},
		{name: "empty array data", in: `{"#":["e","a",[]]}`, kind: 'e', ename: "a", data: `[]`},
		{name: "huge number kept as text", in: `{"#":["e","a",1e999]}`, kind: 'e', ename: "a", data: `1e999`},
		{name: "non-ASCII data", in: `{"#":["p","c","héllo 😀 \u2028"]}`, kind: 'p', ename: "c",
			data: `"héllo 😀 \u2028"`},
		{name: "legacy m", in: `{"m":["e","chat","hi"]}`, legacy: true, kind: 'e', ename: "chat", data: `"hi"`},
		{name: "legacy missing data", in: `{"m":["s","s"]}`, legacy: true, kind: 's', ename: "s", data: `null`},

		// Malformed: not JSON at all.
		{name: "empty", in: ``, err: protocol.ErrMalformed},
		{name: "only spaces", in: "  \n", err: protocol.ErrMalformed},
		{name: "open brace", in: `{`, err: protocol.ErrMalformed},
		{name: "unclosed object", in: `{"#":["e","a",1]`, err: protocol.ErrMalformed},
		{name: "extra brace", in: `{"#":["e","a",1]}}`, err: protocol.ErrMalformed},
		{name: "extra bracket", in: `{"#":["e","a",1]]}`, err: protocol.ErrMalformed},
		{name: "missing data after comma", in: `{"#":["e","a",]}`, err: protocol.ErrMalformed},
		{name: "trailing comma", in: `{"#":["e","a",1,]}`, err: protocol.ErrMalformed},
		{name: "bad literal", in: `{"#":["e","a",tru]}`, err: protocol.ErrMalformed},
		{name: "single quotes", in: `{'#':['e','a',1]}`, err: protocol.ErrMalformed},
		{name: "trailing garbage", in: `{"#":["e","a",1]}x`, err: protocol.ErrMalformed},
		{name: "two frames", in: `{"#":["e","a",1]}{"#":["e","a",1]}`, err: protocol.ErrMalformed},
		{name: "unterminated name", in: `{"#":["e","a`, err: protocol.ErrMalformed},
		{name: "unterminated escape", in: `{"#":["e","a\`, err: protocol.ErrMalformed},
		{name: "bad escape", in: `{"#":["e","\x",1]}`, err: protocol.ErrMalformed},
		{name: "short unicode escape", in: `{"#":["e","\u12",1]}`, err: protocol.ErrMalformed},
		{name: "raw control char in name", in: "{\"#\":[\"e\",\"a\x01\",1]}", err: protocol.ErrMalformed},
		{name: "raw newline in name", in: "{\"#\":[\"e\",\"a\nb\",1]}", err: protocol.ErrMalformed},
		{name: "raw control char in kind", in: "{\"#\":[\"\x00\",\"a\",1]}", err: protocol.ErrMalformed},
		{name: "raw control char in data", in: "{\"#\":[\"e\",\"a\",\"\x1f\"]}", err: protocol.ErrMalformed},
		{name: "NUL after name", in: "{\"#\":[\"e\",\"a\"\x00]}", err: protocol.ErrMalformed},
		{name: "heartbeat pong", in: `A`, err: protocol.ErrMalformed},
		{name: "legacy text pong", in: `#1`, err: protocol.ErrMalformed},
		{name: "binary garbage", in: "\x00\x01\x02", err: protocol.ErrMalformed},
		{name: "truncated frame", in: `{"#":["e","a",{"b":1]}`, err: protocol.ErrMalformed},

		// Valid JSON of the wrong shape.
		{name: "envelope not array", in: `{"#":5}`, err: protocol.ErrShape},
		{name: "envelope object", in: `{"#":{"e":1}}`, err: protocol.ErrShape},
		{name: "empty array", in: `{"#":[]}`, err: protocol.ErrShape},
		{name: "kind only", in: `{"#":["e"]}`, err: protocol.ErrShape},
		{name: "number kind", in: `{"#":[1,"a",2]}`, err: protocol.ErrShape},
		{name: "null kind", in: `{"#":[null,"a",2]}`, err: protocol.ErrShape},
		{name: "number name", in: `{"#":["e",5,1]}`, err: protocol.ErrShape},
		{name: "null name", in: `{"#":["e",null,1]}`, err: protocol.ErrShape},
		{name: "four elements", in: `{"#":["e","a",1,2]}`, err: protocol.ErrShape},
		{name: "four elements nested", in: `{"#":["e","a",{"x":1},{"y":[2]}]}`, err: protocol.ErrShape},
		{name: "other key", in: `{"x":["e","a",1]}`, err: protocol.ErrShape},
		{name: "extra key after", in: `{"#":["e","a",1],"x":1}`, err: protocol.ErrShape},
		{name: "extra key after, array value", in: `{"#":["e","a",1],"x":[2]}`, err: protocol.ErrShape},
		// The envelope key must come first and alone: the JavaScript client
		// never sends anything else.
		{name: "extra key before", in: `{"x":1,"#":["e","a",1]}`, err: protocol.ErrShape},
		{name: "duplicate key", in: `{"#":["e","a"],"#":["e","b"]}`, err: protocol.ErrShape},
		{name: "empty object", in: `{}`, err: protocol.ErrShape},
		{name: "top-level array", in: `["e","a",1]`, err: protocol.ErrShape},
		{name: "top-level string", in: `"#"`, err: protocol.ErrShape},
		{name: "top-level number", in: `9`, err: protocol.ErrShape},
		{name: "top-level null", in: `null`, err: protocol.ErrShape},
		{name: "legacy key in 3.x mode", in: `{"m":["e","a",1]}`, err: protocol.ErrShape},
		{name: "3.x key in legacy mode", in: `{"#":["e","a",1]}`, legacy: true, err: protocol.ErrShape},

		// Unknown kinds.
		{name: "kind z", in: `{"#":["z","a",1]}`, err: protocol.ErrUnknownKind},
		{name: "kind ee", in: `{"#":["ee","a",1]}`, err: protocol.ErrUnknownKind},
		{name: "empty kind", in: `{"#":["","a",1]}`, err: protocol.ErrUnknownKind},
		{name: "upper-case kind", in: `{"#":["E","a",1]}`, err: protocol.ErrUnknownKind},
		{name: "non-ASCII kind", in: `{"#":["é","a",1]}`, err: protocol.ErrUnknownKind},
		{name: "unknown kind without data", in: `{"#":["x","a"]}`, err: protocol.ErrUnknownKind},

		// Invalid UTF-8 in a name, not escaped: refused.
		{name: "invalid UTF-8 name", in: "{\"#\":[\"e\",\"\xff\",1]}", err: errAny},
		{name: "truncated UTF-8 name", in: "{\"#\":[\"e\",\"\xe2\x82\",1]}", err: errAny},
		{name: "surrogate encoded as UTF-8", in: "{\"#\":[\"e\",\"\xed\xa0\x80\",1]}", err: errAny},
		{name: "invalid UTF-8 key", in: "{\"\xff\":[\"e\",\"a\",1]}", err: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := []byte(tt.in)
			m, err := protocol.Decode(in, tt.legacy)
			switch {
			case tt.err == errAny:
				if !isDecodeError(err) {
					t.Fatalf("Decode(%q) = %+v, %v; want a decoding error", tt.in, m, err)
				}
				return
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Fatalf("Decode(%q) error = %v; want %v", tt.in, err, tt.err)
				}
				return
			case err != nil:
				t.Fatalf("Decode(%q) error = %v", tt.in, err)
			}
			if m.Kind != tt.kind || m.Name != tt.ename || string(m.Data) != tt.data {
				t.Fatalf("Decode(%q) = {%q %q %s}; want {%q %q %s}", tt.in, m.Kind, m.Name, m.Data,
					tt.kind, tt.ename, tt.data)
			}
			// encoding/json agrees on every accepted frame.
			kind, name, data, ok := stdFrame(in, envelopeKey(tt.legacy))
			if !ok || kind != string(tt.kind) || name != m.Name || !jsonEqual(data, m.Data) {
				t.Fatalf("encoding/json reads %q as %q %q %s (ok=%v)", tt.in, kind, name, data, ok)
			}
		})
	}
}

// TestDecodeInvalidUTF8 pins down how Decode treats invalid UTF-8, which
// the hub never hands it (it closes text frames that are not UTF-8 and reads
// binary ones as Latin-1): an unescaped invalid name is refused, but once
// the name holds an escape it is unescaped by encoding/json, which replaces
// invalid bytes with U+FFFD; data is not checked at all.
func TestDecodeInvalidUTF8(t *testing.T) {
	t.Parallel()
	m, err := protocol.Decode([]byte("{\"#\":[\"e\",\"\\u0025\xff\",1]}"), false)
	if err != nil || m.Name != "%\uFFFD" {
		t.Errorf("escaped name with invalid UTF-8: %+v, %v", m, err)
	}
	m, err = protocol.Decode([]byte("{\"#\":[\"e\",\"a\",\"\xff\"]}"), false)
	if err != nil || string(m.Data) != "\"\xff\"" {
		t.Errorf("data with invalid UTF-8: %+v, %v", m, err)
	}
}

func TestDecodeDataAliasesInput(t *testing.T) {
	t.Parallel()
	in := []byte(`{"#":["p","c",{"a":1}]}`)
	m, err := protocol.Decode(in, false)
	if err != nil {
		t.Fatal(err)
	}
	copy(in[bytes.IndexByte(in, '{')+len(`{"#":["p","c",{"a":`):], "2")
	if string(m.Data) != `{"a":2}` {
		t.Fatalf("Data = %s; want it to alias the input", m.Data)
	}
}

// TestDecodeNames checks that awkward names arrive exactly as a JavaScript
// client that JSON.stringify-ed them sent them.
func TestDecodeNames(t *testing.T) {
	t.Parallel()
	for _, name := range oddNames {
		for _, legacy := range []bool{false, true} {
			nameJSON, err := json.Marshal(name) // what JSON.stringify produces, modulo <>&
			if err != nil {
				t.Fatal(err)
			}
			frame := fmt.Sprintf(`{%q:["p",%s,{"n":%s}]}`, envelopeKey(legacy), nameJSON, nameJSON)
			m, err := protocol.Decode([]byte(frame), legacy)
			if err != nil {
				t.Fatalf("Decode(%s): %v", frame, err)
			}
			if m.Kind != 'p' || m.Name != name {
				t.Fatalf("Decode(%s) = %q %q; want p %q", frame, m.Kind, m.Name, name)
			}
			if want := `{"n":` + string(nameJSON) + `}`; string(m.Data) != want {
				t.Fatalf("Decode(%s).Data = %s; want %s", frame, m.Data, want)
			}
		}
	}
}

func TestDecodeString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{`"bench"`, "bench", true},
		{`  "bench"  `, "bench", true},
		{"\n\t\"a b\"\r\n", "a b", true},
		{`""`, "", true},
		{`"x\u0025"`, "x%", true},
		{`"\ud83d\ude00"`, "😀", true},
		{`"\"\\\/\b\f\n\r\t"`, "\"\\/\b\f\n\r\t", true},
		{`"__proto__"`, "__proto__", true},
		{`"日本語"`, "日本語", true},
		{`"\u2028"`, "\u2028", true},
		{``, "", false},
		{`"`, "", false},
		{`"abc`, "", false},
		{`abc`, "", false},
		{`5`, "", false},
		{`null`, "", false},
		{`["a"]`, "", false},
		{`{"a":1}`, "", false},
		{`"a""b"`, "", false},
		{`"a" x`, "", false},
		{`'a'`, "", false},
		{"\"a\x01\"", "", false},
		{"\"\xff\"", "", false},
		{`"\x"`, "", false},
		{`"\u00"`, "", false},
	}
	for _, tt := range tests {
		got, ok := protocol.DecodeString([]byte(tt.in))
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("DecodeString(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	for _, name := range oddNames {
		b, _ := json.Marshal(name)
		if got, ok := protocol.DecodeString(b); !ok || got != name {
			t.Errorf("DecodeString(%s) = %q, %v; want %q", b, got, ok, name)
		}
	}
}

func TestFromLatin1(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []byte
		want string
	}{
		{nil, ""},
		{[]byte(`{"#":["e","a",1]}`), `{"#":["e","a",1]}`},
		{[]byte{0xe9}, "é"},
		{[]byte{'c', 'a', 'f', 0xe9}, "café"},
		{[]byte{0x00, 0x7f, 0x80, 0xa0, 0xff}, "\x00\x7f\u0080\u00a0\u00ff"},
	}
	for _, tt := range tests {
		if got := string(protocol.FromLatin1(tt.in)); got != tt.want {
			t.Errorf("FromLatin1(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
	// Every byte maps to the code point of the same value.
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	out := protocol.FromLatin1(all)
	if !utf8.Valid(out) {
		t.Fatal("FromLatin1 output is not UTF-8")
	}
	for i, r := range []rune(string(out)) {
		if r != rune(i) {
			t.Fatalf("byte %#x became %U", i, r)
		}
	}
	// A binary frame from the JavaScript client, whose string had a
	// Latin-1 character, decodes after conversion.
	frame := append([]byte(`{"#":["e","caf`), 0xe9, '"', ',', '1', ']', '}')
	m, err := protocol.Decode(protocol.FromLatin1(frame), false)
	if err != nil || m.Name != "café" {
		t.Fatalf("Decode(FromLatin1(%q)) = %+v, %v", frame, m, err)
	}
}

func TestDecodeLongInput(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 1<<20)
	frame := `{"#":["p","` + long + `","` + long + `"]}`
	m, err := protocol.Decode([]byte(frame), false)
	if err != nil || m.Name != long || string(m.Data) != `"`+long+`"` {
		t.Fatalf("Decode of a 2 MiB frame: kind %q, name %d bytes, data %d bytes, %v",
			m.Kind, len(m.Name), len(m.Data), err)
	}
	// Deep nesting is refused like encoding/json refuses it, without a
	// stack overflow.
	deep := `{"#":["p","c",` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `]}`
	if _, err := protocol.Decode([]byte(deep), false); err == nil {
		t.Fatal("Decode accepted 100000 levels of nesting")
	}
}
