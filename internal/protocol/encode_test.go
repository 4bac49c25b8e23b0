package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

func TestAppendFrame(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		enc  protocol.Encoder
		kind byte
		ev   string
		data string
		want string
	}{
		{"publish", protocol.Encoder{}, protocol.KindPublish, "news", `{"a":1}`, `{"#":["p","news",{"a":1}]}`},
		{"event", protocol.Encoder{}, protocol.KindEvent, "chat", `"hi"`, `{"#":["e","chat","hi"]}`},
		{"legacy", protocol.Encoder{Legacy: true}, protocol.KindEvent, "chat", `null`, `{"m":["e","chat",null]}`},
		{"legacy ASCII", protocol.Encoder{Legacy: true, ASCII: true}, protocol.KindEvent, "é", `"é"`,
			`{"m":["e","\u00e9","\u00e9"]}`},
		{"text keeps UTF-8", protocol.Encoder{}, protocol.KindPublish, "日本", `"😀é"`, `{"#":["p","日本","😀é"]}`},
		{"ASCII BMP", protocol.Encoder{ASCII: true}, protocol.KindPublish, "日本", `"é"`,
			`{"#":["p","\u65e5\u672c","\u00e9"]}`},
		{"ASCII astral is a surrogate pair", protocol.Encoder{ASCII: true}, protocol.KindPublish, "😀", `"😀"`,
			`{"#":["p","\ud83d\ude00","\ud83d\ude00"]}`},
		{"ASCII last code point", protocol.Encoder{ASCII: true}, protocol.KindPublish, "\U0010FFFF", "\"\U0010FFFF\"",
			`{"#":["p","\udbff\udfff","\udbff\udfff"]}`},
		{"ASCII first astral", protocol.Encoder{ASCII: true}, protocol.KindPublish, "\U00010000", `1`,
			`{"#":["p","\ud800\udc00",1]}`},
		{"ASCII data keys and nesting", protocol.Encoder{ASCII: true}, protocol.KindPublish, "c",
			`{"ключ":["ü",{"😀":1}]}`, `{"#":["p","c",{"\u043a\u043b\u044e\u0447":["\u00fc",{"\ud83d\ude00":1}]}]}`},
		{"ASCII keeps existing escapes", protocol.Encoder{ASCII: true}, protocol.KindPublish, "c",
			`"\u00e9\n\"é"`, `{"#":["p","c","\u00e9\n\"\u00e9"]}`},
		{"text line separators in name", protocol.Encoder{}, protocol.KindEvent, "a\u2028b\u2029", `1`,
			`{"#":["e","a\u2028b\u2029",1]}`},
		{"name escapes", protocol.Encoder{}, protocol.KindEvent, "\"\\\n\r\t\x00\x1f\x7f/", `1`,
			`{"#":["e","\"\\\n\r\t\u0000\u001f` + "\x7f" + `/",1]}`},
		{"no HTML escaping", protocol.Encoder{}, protocol.KindEvent, "<a&b>", `"<&>"`, `{"#":["e","<a&b>","<&>"]}`},
		{"invalid UTF-8 name, text", protocol.Encoder{}, protocol.KindEvent, "a\xffb", `1`,
			`{"#":["e","a` + "\uFFFD" + `b",1]}`},
		{"invalid UTF-8 name, ASCII", protocol.Encoder{ASCII: true}, protocol.KindEvent, "a\xffb", `1`,
			`{"#":["e","a\ufffdb",1]}`},
		{"truncated sequence, one U+FFFD per byte", protocol.Encoder{ASCII: true}, protocol.KindEvent,
			"\xe2\x82", `1`, `{"#":["e","\ufffd\ufffd",1]}`},
		{"UTF-8 encoded surrogate", protocol.Encoder{ASCII: true}, protocol.KindEvent,
			"\xed\xa0\x80", `1`, `{"#":["e","\ufffd\ufffd\ufffd",1]}`},
		{"invalid UTF-8 in data, ASCII", protocol.Encoder{ASCII: true}, protocol.KindEvent,
			"a", "\"\xff\"", `{"#":["e","a","\ufffd"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.enc.AppendFrame(nil, tt.kind, tt.ev, []byte(tt.data))
			if string(got) != tt.want {
				t.Fatalf("AppendFrame = %s\n                  want %s", got, tt.want)
			}
			if tt.enc.ASCII && !isASCII(got) {
				t.Fatalf("ASCII frame has non-ASCII bytes: %q", got)
			}
			kind, name, data, ok := stdFrame(got, envelopeKey(tt.enc.Legacy))
			if !ok || kind != string(tt.kind) || name != stdString(tt.ev) || !jsonEqual(data, []byte(tt.data)) {
				t.Fatalf("encoding/json reads %s as %q %q %s (ok=%v)", got, kind, name, data, ok)
			}
		})
	}
}

func TestAppendFrameAppends(t *testing.T) {
	dst := []byte("prefix")
	got := protocol.Encoder{}.AppendFrame(dst, 'e', "a", []byte("1"))
	if string(got) != `prefix{"#":["e","a",1]}` {
		t.Fatalf("AppendFrame = %s", got)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		got = protocol.Encoder{ASCII: true}.AppendFrame(got[:0], 'p', "ü", []byte(`{"x":"😀"}`))
	}); allocs != 0 {
		t.Errorf("AppendFrame into a large enough buffer allocates %v times", allocs)
	}
}

// TestAppendFrameNames round-trips awkward names through both encodings,
// Decode and encoding/json.
func TestAppendFrameNames(t *testing.T) {
	t.Parallel()
	names := append([]string{"\xff", "a\xc3", "\xe2\x82\xac\xe2", "\xf4\x90\x80\x80", "\xc0\xaf"}, oddNames...)
	for _, name := range names {
		for _, enc := range []protocol.Encoder{{}, {ASCII: true}, {Legacy: true}, {ASCII: true, Legacy: true}} {
			data := []byte(`{"name":` + string(mustValue(t, name)) + `}`)
			frame := enc.AppendFrame(nil, protocol.KindPublish, name, data)
			want := stdString(name)
			if enc.ASCII && !isASCII(frame) {
				t.Errorf("%+v: frame for %q is not ASCII: %q", enc, name, frame)
			}
			if bytes.Contains(frame, []byte("\u2028")) || bytes.Contains(frame, []byte("\u2029")) {
				t.Errorf("%+v: frame for %q has a raw U+2028/U+2029: %q", enc, name, frame)
			}
			if !json.Valid(frame) {
				t.Errorf("%+v: frame for %q is not JSON: %q", enc, name, frame)
				continue
			}
			m, err := protocol.Decode(frame, enc.Legacy)
			if err != nil || m.Kind != protocol.KindPublish || m.Name != want || !jsonEqual(m.Data, data) {
				t.Errorf("%+v: Decode(%q) = %+v, %v; want name %q", enc, frame, m, err, want)
			}
			kind, stdName, stdData, ok := stdFrame(frame, envelopeKey(enc.Legacy))
			if !ok || kind != "p" || stdName != want || !jsonEqual(stdData, data) {
				t.Errorf("%+v: encoding/json reads %q as %q %q %s", enc, frame, kind, stdName, stdData)
			}
		}
	}
}

func mustValue(t *testing.T, v any) []byte {
	t.Helper()
	b, err := protocol.AppendValue(nil, v)
	if err != nil {
		t.Fatalf("AppendValue(%#v): %v", v, err)
	}
	return b
}

func TestConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		enc    protocol.Encoder
		ping   int64
		binary bool
		want   string
	}{
		{protocol.Encoder{}, 20000, false, `{"#":["s","c",{"ping":20000,"binary":false}]}`},
		{protocol.Encoder{ASCII: true}, 10000, true, `{"#":["s","c",{"ping":10000,"binary":true}]}`},
		{protocol.Encoder{Legacy: true}, 20000, false, `{"m":["s","c",{"ping":20000,"binary":false}]}`},
		{protocol.Encoder{}, 0, false, `{"#":["s","c",{"ping":0,"binary":false}]}`},
	}
	for _, tt := range tests {
		got := tt.enc.Config(tt.ping, tt.binary, false)
		if string(got) != tt.want {
			t.Errorf("%+v.Config(%d, %v) = %s; want %s", tt.enc, tt.ping, tt.binary, got, tt.want)
		}
		m, err := protocol.Decode(got, tt.enc.Legacy)
		if err != nil || m.Kind != protocol.KindSystem || m.Name != protocol.SystemConfig {
			t.Errorf("Decode(%s) = %+v, %v", got, m, err)
		}
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	if f, bin := (protocol.Encoder{}).Ping(); string(f) != "9" || !bin {
		t.Errorf("Ping() = %q, %v; want \"9\", binary", f, bin)
	}
	if f, bin := (protocol.Encoder{ASCII: true}).Ping(); string(f) != "9" || !bin {
		t.Errorf("ASCII Ping() = %q, %v; want \"9\", binary", f, bin)
	}
	if f, bin := (protocol.Encoder{Legacy: true}).Ping(); string(f) != "#0" || bin {
		t.Errorf("legacy Ping() = %q, %v; want \"#0\", text", f, bin)
	}
	if string(protocol.Pong) != "A" || string(protocol.LegacyPong) != "#1" {
		t.Errorf("Pong = %q, LegacyPong = %q", protocol.Pong, protocol.LegacyPong)
	}
}

type point struct {
	X    int    `json:"x"`
	Y    int    `json:"y,omitempty"`
	Name string `json:"name"`
	skip int
}

type marshaler struct{}

func (marshaler) MarshalJSON() ([]byte, error) { return []byte(`{"custom" : true}`), nil }

type failing struct{}

var errFailing = errors.New("failing marshaler")

func (failing) MarshalJSON() ([]byte, error) { return nil, errFailing }

func TestAppendValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"nil", nil, `null`},
		{"string", "hi", `"hi"`},
		{"empty string", "", `""`},
		{"string with specials", "<a href=\"x\">&amp;</a>\n", `"<a href=\"x\">&amp;</a>\n"`},
		{"string keeps UTF-8", "héllo 😀", `"héllo 😀"`},
		{"string escapes line separators", "a\u2028b\u2029", `"a\u2028b\u2029"`},
		{"string control chars", "\x00\x1f", `"\u0000\u001f"`},
		{"string invalid UTF-8", "a\xffb", "\"a\uFFFDb\""},
		{"raw object", json.RawMessage(`{"a":[1,2]}`), `{"a":[1,2]}`},
		{"raw trimmed", json.RawMessage(" \n[1, 2]\t "), `[1, 2]`},
		{"raw string with HTML", json.RawMessage(`"<&>"`), `"<&>"`},
		{"raw null", json.RawMessage(`null`), `null`},
		{"raw nil", json.RawMessage(nil), `null`}, // as encoding/json
		{"raw non-ASCII", json.RawMessage(`"ü"`), `"ü"`},
		{"struct", point{X: 1, Name: "<p>", skip: 3}, `{"x":1,"name":"<p>"}`},
		{"pointer to struct", &point{X: 1, Y: 2}, `{"x":1,"y":2,"name":""}`},
		{"map sorted, no HTML escaping", map[string]any{"b": 2, "a": "<&>", "c": nil},
			`{"a":"<&>","b":2,"c":null}`},
		{"slice", []int{1, 2, 3}, `[1,2,3]`},
		{"nil slice", []int(nil), `null`},
		{"bytes are base64", []byte("hi"), `"aGk="`},
		{"int", 42, `42`},
		{"float", 1.5, `1.5`},
		{"bool", true, `true`},
		{"marshaler", marshaler{}, `{"custom":true}`},
		{"nested raw", map[string]json.RawMessage{"r": json.RawMessage(`[ 1 ]`)}, `{"r":[1]}`},
		{"string with line separator in struct", point{Name: "\u2028"}, `{"x":0,"name":"\u2028"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := protocol.AppendValue([]byte("pre:"), tt.v)
			if err != nil {
				t.Fatalf("AppendValue(%#v): %v", tt.v, err)
			}
			if string(got) != "pre:"+tt.want {
				t.Fatalf("AppendValue(%#v) = %s; want pre:%s", tt.v, got, tt.want)
			}
			// Semantically what encoding/json produces.
			std, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(got[len("pre:"):], std) {
				t.Fatalf("AppendValue(%#v) = %s; encoding/json says %s", tt.v, got, std)
			}
		})
	}
}

func TestAppendValueErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    any
		err  error // nil: any error
	}{
		{"raw invalid", json.RawMessage(`{`), protocol.ErrInvalidJSON},
		{"raw two values", json.RawMessage(`1 2`), protocol.ErrInvalidJSON},
		{"raw empty", json.RawMessage(``), protocol.ErrInvalidJSON},
		{"raw spaces", json.RawMessage(`  `), protocol.ErrInvalidJSON},
		{"raw invalid UTF-8", json.RawMessage("\"\xff\""), protocol.ErrInvalidUTF8},
		{"raw control char", json.RawMessage("\"\x01\""), protocol.ErrInvalidJSON},
		{"channel", make(chan int), nil},
		{"func", func() {}, nil},
		{"NaN", math.NaN(), nil},
		{"Inf in map", map[string]float64{"x": math.Inf(1)}, nil},
		{"failing marshaler", failing{}, errFailing},
	}
	for _, tt := range tests {
		dst := []byte("pre:")
		got, err := protocol.AppendValue(dst, tt.v)
		if err == nil || (tt.err != nil && !errors.Is(err, tt.err)) {
			t.Errorf("%s: AppendValue = %s, %v; want error %v", tt.name, got, err, tt.err)
		}
		if string(got) != "pre:" {
			t.Errorf("%s: AppendValue changed dst to %q on error", tt.name, got)
		}
	}
}

// TestAppendValueConcurrent shares the encoder buffer pool between
// goroutines; run with -race.
func TestAppendValueConcurrent(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := map[string]any{"g": g, "s": strings.Repeat("x", g*100)}
			want, _ := json.Marshal(v)
			for range 200 {
				got, err := protocol.AppendValue(nil, v)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("AppendValue = %s, %v; want %s", got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}
