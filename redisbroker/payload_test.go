package redisbroker

import (
	"bytes"
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
	for _, bad := range []string{"", "\x01short", "\x03123456789", `{"#":["p","x",1]}`,
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
	f.Fuzz(func(t *testing.T, p string) {
		origin, version, body, ok := decodePayload(p)
		if !ok {
			return
		}
		var again []byte
		if version == versionSingle {
			again = appendPayload(nil, origin, []byte(body))
		} else {
			var frames [][]byte
			for rest := body; len(rest) > 0; {
				var f string
				f, rest = splitFrame(rest)
				frames = append(frames, []byte(f))
			}
			if len(frames) != countFrames(version, body) {
				t.Fatalf("countFrames disagrees with nextFrame on %q", p)
			}
			again = appendBatch(nil, origin, frames...)
		}
		// A uvarint may be written with redundant bytes; the frames must
		// still be the same.
		if version == versionSingle && string(again) != p {
			t.Fatalf("decode then encode changed %q to %q", p, again)
		}
		if _, v2, body2, ok := decodePayload(string(again)); !ok || v2 != version || countFrames(v2, body2) != countFrames(version, body) {
			t.Fatalf("re-encoding %q does not decode alike", p)
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
