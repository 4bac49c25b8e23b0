package redisbroker

import (
	"bytes"
	"slices"
	"testing"
)

func TestPayloadRoundTrip(t *testing.T) {
	origin := originID{1, 2, 3, 4, 5, 6, 7, 8}
	frames := [][]byte{nil, []byte(`{"#":["p","x",1]}`), bytes.Repeat([]byte{0, 0xff}, 1000)}
	for _, frame := range frames {
		p := appendPayload(nil, origin, frame)
		o, v, body, ok := decodePayload(string(p))
		if !ok || o != origin || v != versionSingle || body != string(frame) {
			t.Fatalf("round trip of %q: %v %d %q %v", frame, o, v, body, ok)
		}
	}
	p := appendBatch(nil, origin, frames...)
	o, v, body, ok := decodePayload(string(p))
	if !ok || o != origin || v != versionBatch || countFrames(v, body) != len(frames) {
		t.Fatalf("batch: %v %d %v, %d frames", o, v, ok, countFrames(v, body))
	}
	rest := body
	for i, want := range frames {
		var f string
		f, rest = splitFrame(rest)
		if f != string(want) {
			t.Fatalf("frame %d = %q, want %q", i, f, want)
		}
	}
	// Version 3, a frame with its position, is made by the history
	// script: the header, then the frame.
	hist := string(appendHeader(nil, versionHistory, origin)) + `{"#":["p","x",1,{"offset":1,"epoch":"e"}]}`
	if o, v, body, ok := decodePayload(hist); !ok || o != origin || v != versionHistory || body != hist[headerLen:] || countFrames(v, body) != 1 {
		t.Fatalf("version 3: %v %d %q %v", o, v, body, ok)
	}
	for _, bad := range []string{"", "\x01short", "\x04123456789", "\x00123456789", `{"#":["p","x",1]}`,
		"\x0212345678\x05abc", "\x0212345678\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"} {
		if _, _, _, ok := decodePayload(bad); ok {
			t.Errorf("decodePayload(%q) accepted a foreign or broken message", bad)
		}
	}
}

// FuzzDecodePayload: any message from Redis, written by anyone, is either
// rejected or split into a header and frames that encode back to it,
// without panicking.
func FuzzDecodePayload(f *testing.F) {
	f.Add(string(appendPayload(nil, originID{9}, []byte(`{"#":["p","ch",{"a":1}]}`))))
	f.Add(string(appendBatch(nil, originID{9}, []byte(`{"#":["p","ch",1]}`), []byte(`{"#":["p","ch",2]}`))))
	f.Add("")
	f.Add("\x01")
	f.Add("\x0212345678\x80")
	f.Add("hello world")
	f.Add(string(appendHeader(nil, versionHistory, originID{9})) + `{"#":["p","ch",1,{"offset":7,"epoch":"abc"}]}`)
	f.Fuzz(func(t *testing.T, p string) {
		origin, version, body, ok := decodePayload(p)
		if !ok {
			return
		}
		frames := func(version byte, body string) []string {
			if version != versionBatch {
				return []string{body}
			}
			var out []string
			for rest := body; len(rest) > 0; {
				var f string
				f, rest = splitFrame(rest)
				out = append(out, f)
			}
			if len(out) != countFrames(version, body) {
				t.Fatalf("countFrames disagrees with splitFrame on %q", p)
			}
			return out
		}
		want := frames(version, body)
		var again []byte
		if version != versionBatch {
			again = append(appendHeader(nil, version, origin), body...)
		} else {
			bs := make([][]byte, len(want))
			for i, f := range want {
				bs[i] = []byte(f)
			}
			again = appendBatch(nil, origin, bs...)
		}
		// A uvarint may be written with redundant bytes, so only the
		// decoded origin and frames must be the same.
		origin2, v2, body2, ok := decodePayload(string(again))
		if !ok || v2 != version || origin2 != origin || !slices.Equal(frames(v2, body2), want) {
			t.Fatalf("re-encoding %q does not decode alike: %q", p, again)
		}
	})
}

func TestSlot(t *testing.T) {
	// The Redis Cluster specification's test vector: CRC16("123456789") is
	// 0x31C3.
	if got := slot("123456789"); got != 0x31C3 {
		t.Fatalf("slot(123456789) = %d, want %d", got, 0x31C3)
	}
	// Hash tags: only the part between the first { and the next } counts,
	// unless it is empty.
	for _, same := range [][2]string{
		{"{user1000}.following", "{user1000}.followers"},
		{"foo{bar}{zap}", "bar"},
		{"x{bar}", "bar"},
	} {
		if slot(same[0]) != slot(same[1]) {
			t.Errorf("slot(%q) != slot(%q)", same[0], same[1])
		}
	}
	if slot("foo{}{bar}") == slot("bar") {
		t.Errorf("an empty hash tag must hash the whole key")
	}
}
