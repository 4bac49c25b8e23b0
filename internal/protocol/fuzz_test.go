package protocol_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

// decodeSeeds are valid and nearly valid client frames; they run in every
// `go test` and start the fuzzer off.
var decodeSeeds = []string{
	`{"#":["e","chat","hi"]}`,
	`{"#":["p","news",{"title":"hi","n":[1,2.5e10,-3],"ok":true,"nil":null}]}`,
	`{"#":["s","s","bench"]}`,
	`{"#":["s","u","bench"]}`,
	`{"#":["e","ping"]}`,
	`{"#":["e","x\u0025",1]}`,
	`{"#":["e","\ud83d\ude00","\u2028"]}`,
	`{"#":["p","__proto__",{"constructor":{"length":0}}]}`,
	" \t{ \"#\" : [ \"e\" , \"a b\" , [ ] ] }\n",
	`{"#":["p","日本語","héllo 😀"]}`,
	`{"#":["e","a","]}"]}`,
	`{"#":["e","a",1e999]}`,
	`{"#":["z","a",1]}`,
	`{"#":["e","a",1,2]}`,
	`{"#":[1,"a",2]}`,
	`{"#":5}`,
	`{"x":["e","a",1]}`,
	`{"#":["e","a",]}`,
	"{\"#\":[\"e\",\"\xff\",1]}",
	"{\"#\":[\"e\",\"\\u0025\xff\",\"\xfe\"]}",
	`A`,
}

func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s), false)
	}
	f.Add([]byte(`{"m":["e","chat","hi"]}`), true)
	f.Add([]byte(`{"m":["s","s"]}`), true)
	f.Fuzz(func(t *testing.T, b []byte, legacy bool) {
		in := bytes.Clone(b)
		m, err := protocol.Decode(b, legacy)
		if !bytes.Equal(in, b) {
			t.Fatalf("Decode modified its input")
		}
		key := envelopeKey(legacy)
		stdKind, stdName, stdData, stdOK := stdFrame(b, key)
		if err != nil {
			if !isDecodeError(err) {
				t.Fatalf("Decode(%q) returned an unclassified error %v", b, err)
			}
			// Whatever encoding/json accepts as a frame of a known kind,
			// Decode must accept too, as long as the input is UTF-8 (the hub
			// never decodes anything else).
			if stdOK && utf8.Valid(b) && len(stdKind) == 1 && bytes.ContainsAny([]byte(stdKind), "eps") &&
				firstKeyOnly(b) {
				t.Fatalf("Decode(%q) = %v, but encoding/json reads it as %q %q %s", b, err, stdKind, stdName, stdData)
			}
			return
		}
		switch m.Kind {
		case protocol.KindEvent, protocol.KindPublish, protocol.KindSystem:
		default:
			t.Fatalf("Decode(%q) returned kind %q", b, m.Kind)
		}
		if !utf8.ValidString(m.Name) {
			t.Fatalf("Decode(%q) returned a name that is not UTF-8: %q", b, m.Name)
		}
		if !json.Valid(m.Data) {
			t.Fatalf("Decode(%q) returned invalid data %q", b, m.Data)
		}
		// encoding/json agrees.
		if !stdOK || stdKind != string(m.Kind) || stdName != m.Name || !jsonEqual(stdData, m.Data) {
			t.Fatalf("Decode(%q) = %q %q %s; encoding/json reads %q %q %s (ok=%v)",
				b, m.Kind, m.Name, m.Data, stdKind, stdName, stdData, stdOK)
		}
		// Re-encoding in either mode decodes to the same frame.
		for _, ascii := range []bool{false, true} {
			enc := protocol.Encoder{ASCII: ascii, Legacy: legacy}
			out := enc.AppendFrame(nil, m.Kind, m.Name, m.Data)
			if ascii && !isASCII(out) {
				t.Fatalf("ASCII AppendFrame(%q) is not ASCII: %q", b, out)
			}
			m2, err := protocol.Decode(out, legacy)
			if err != nil {
				t.Fatalf("Decode(AppendFrame(ascii=%v)) of %q = %v; frame %q", ascii, b, err, out)
			}
			if m2.Kind != m.Kind || m2.Name != m.Name || !jsonEqual(m2.Data, m.Data) {
				t.Fatalf("round trip (ascii=%v) of %q: %q %q %s -> %q -> %q %q %s",
					ascii, b, m.Kind, m.Name, m.Data, out, m2.Kind, m2.Name, m2.Data)
			}
			if !ascii && !bytes.Equal(m2.Data, m.Data) {
				t.Fatalf("text round trip changed data bytes: %q -> %q", m.Data, m2.Data)
			}
		}
	})
}

// firstKeyOnly reports whether the JSON object b has exactly one member,
// which stdFrame also checks; Decode additionally needs no extra members.
func firstKeyOnly(b []byte) bool {
	var env map[string]json.RawMessage
	if json.Unmarshal(b, &env) != nil {
		return false
	}
	// Duplicate keys collapse in a map: count members with a Decoder.
	d := json.NewDecoder(bytes.NewReader(b))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	n := 0
	for d.More() {
		if _, err := d.Token(); err != nil {
			return false
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return false
		}
		n++
	}
	return n == 1
}

// FuzzAppendString encodes arbitrary strings as JSON strings (AppendValue)
// and as names in frames of both encodings.
func FuzzAppendString(f *testing.F) {
	for _, s := range oddNames {
		f.Add(s)
	}
	f.Add("\xff")
	f.Add("a\xe2\x82")
	f.Add("\xed\xa0\x80")
	f.Fuzz(func(t *testing.T, s string) {
		want := stdString(s)
		v, err := protocol.AppendValue(nil, s)
		if err != nil {
			t.Fatalf("AppendValue(%q): %v", s, err)
		}
		if !utf8.Valid(v) || bytes.Contains(v, []byte("\u2028")) || bytes.Contains(v, []byte("\u2029")) {
			t.Fatalf("AppendValue(%q) = %q: not UTF-8 or has a raw line separator", s, v)
		}
		var got string
		if err := json.Unmarshal(v, &got); err != nil || got != want {
			t.Fatalf("AppendValue(%q) = %q reads back as %q, %v; want %q", s, v, got, err, want)
		}
		if got, ok := protocol.DecodeString(v); !ok || got != want {
			t.Fatalf("DecodeString(AppendValue(%q)) = %q, %v; want %q", s, got, ok, want)
		}
		for _, ascii := range []bool{false, true} {
			enc := protocol.Encoder{ASCII: ascii}
			frame := enc.AppendFrame(nil, protocol.KindEvent, s, v)
			if ascii && !isASCII(frame) {
				t.Fatalf("ASCII frame for %q is not ASCII: %q", s, frame)
			}
			m, err := protocol.Decode(frame, false)
			if err != nil || m.Name != want || !jsonEqual(m.Data, v) {
				t.Fatalf("Decode(%q) = %+v, %v; want name %q", frame, m, err, want)
			}
		}
	})
}

// FuzzFrameRoundTrip builds frames from an arbitrary name and an arbitrary
// value (raw JSON when it is valid, else a string), in every encoding.
func FuzzFrameRoundTrip(f *testing.F) {
	f.Add(byte('p'), "news", []byte(`{"title":"hi","n":[1,2]}`), false, false)
	f.Add(byte('e'), "chat", []byte(`"héllo 😀"`), true, false)
	f.Add(byte('s'), "s", []byte(`"bench"`), false, true)
	f.Add(byte('e'), "__proto__", []byte(`{"\u2028":"\ud83d\ude00"}`), true, true)
	f.Add(byte('p'), "%", []byte("not json \xff"), true, false)
	f.Add(byte('p'), "[", []byte("\"\xff\""), false, false)
	f.Add(byte('p'), "0", []byte(" [ ] "), true, false)
	f.Fuzz(func(t *testing.T, kindSel byte, name string, data []byte, ascii, legacy bool) {
		kind := []byte{protocol.KindEvent, protocol.KindPublish, protocol.KindSystem}[int(kindSel)%3]
		raw, err := protocol.AppendValue(nil, json.RawMessage(data))
		switch {
		case !json.Valid(data):
			if err != protocol.ErrInvalidJSON {
				t.Fatalf("AppendValue(RawMessage(%q)) error = %v; want ErrInvalidJSON", data, err)
			}
		case !utf8.Valid(data):
			if err != protocol.ErrInvalidUTF8 {
				t.Fatalf("AppendValue(RawMessage(%q)) error = %v; want ErrInvalidUTF8", data, err)
			}
		case err != nil:
			t.Fatalf("AppendValue(RawMessage(%q)): %v", data, err)
		case !jsonEqual(raw, data):
			t.Fatalf("AppendValue(RawMessage(%q)) = %q", data, raw)
		}
		if err != nil {
			raw, err = protocol.AppendValue(nil, string(data))
			if err != nil {
				t.Fatal(err)
			}
		}
		enc := protocol.Encoder{ASCII: ascii, Legacy: legacy}
		frame := enc.AppendFrame(nil, kind, name, raw)
		if !utf8.Valid(frame) || !json.Valid(frame) {
			t.Fatalf("AppendFrame(%q, %q) = %q is not valid UTF-8 JSON", name, raw, frame)
		}
		if ascii && !isASCII(frame) {
			t.Fatalf("ASCII AppendFrame(%q, %q) = %q", name, raw, frame)
		}
		wantName := stdString(name)
		m, err := protocol.Decode(frame, legacy)
		if err != nil || m.Kind != kind || m.Name != wantName || !jsonEqual(m.Data, raw) {
			t.Fatalf("Decode(%q) = %q %q %s, %v; want %q %q %s", frame, m.Kind, m.Name, m.Data, err,
				kind, wantName, raw)
		}
		stdKind, stdName, stdData, ok := stdFrame(frame, envelopeKey(legacy))
		if !ok || stdKind != string(kind) || stdName != wantName || !jsonEqual(stdData, raw) {
			t.Fatalf("encoding/json reads %q as %q %q %s", frame, stdKind, stdName, stdData)
		}
	})
}
