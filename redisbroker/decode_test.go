package redisbroker

import (
	"bytes"
	"strings"
	"testing"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// FuzzParseEntry: any value in a presence hash, written by anyone, is
// either refused or split into a lease and a user that write back to it.
func FuzzParseEntry(f *testing.F) {
	f.Add(entry(newLease(), "alice"))
	f.Add(entry(newLease(), ""))
	f.Add(entry(newLease(), "ü \"x\" 😀"))
	f.Add("short")
	f.Add("abc{}defghijk")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		lease, user, ok := parseEntry(v)
		if !ok {
			return
		}
		if len(lease) != leaseLen || strings.Trim(lease, tagAlphabet) != "" {
			t.Fatalf("parseEntry(%q) accepted the lease %q", v, lease)
		}
		if entry(lease, user) != v {
			t.Fatalf("parseEntry(%q) = %q, %q, which write back as %q", v, lease, user, entry(lease, user))
		}
	})
}

// historyReply builds a reply of readHistoryScript as go-redis returns it.
func historyReply(top int64, epoch string, lost int64, entries ...string) []any {
	r := []any{top, epoch, lost}
	for _, e := range entries {
		r = append(r, e)
	}
	return r
}

func TestDecodeHistory(t *testing.T) {
	t.Parallel()
	frame := protocol.AppendPosition(protocol.Encoder{}.AppendFrame(nil, protocol.KindPublish, "ch", []byte("1")),
		protocol.Position{Offset: 7, Epoch: "abc"})
	frames, top, lost, err := decodeHistory(historyReply(7, "abc", 0, "1712345678901"+string(frame)))
	if err != nil || lost || top != (hub.Position{Offset: 7, Epoch: "abc"}) || len(frames) != 1 || !bytes.Equal(frames[0], frame) {
		t.Fatalf("decodeHistory: %q %v %v %v", frames, top, lost, err)
	}
	if _, top, lost, err := decodeHistory(historyReply(7, "abc", 1)); err != nil || !lost || top.Offset != 7 {
		t.Fatalf("lost: %v %v %v", top, lost, err)
	}
	for _, bad := range []any{
		nil, "x", []any{}, []any{int64(1), "abc"},
		historyReply(-1, "abc", 0), historyReply(1, "", 0), historyReply(1, "a-b", 0), historyReply(1, "abc", 2),
		historyReply(1, "abc", 1, "1712345678901x"), historyReply(1, "abc", 0, "171234567890"),
		historyReply(1, "abc", 0, "17123456789x1{}"), []any{int64(1), "abc", int64(0), int64(5)},
		[]any{"1", "abc", int64(0)},
	} {
		if _, _, _, err := decodeHistory(bad); err == nil {
			t.Errorf("decodeHistory(%#v) accepted it", bad)
		}
	}
	if pos, err := decodePosition([]any{int64(3), "e1"}); err != nil || pos != (hub.Position{Offset: 3, Epoch: "e1"}) {
		t.Fatalf("decodePosition: %v %v", pos, err)
	}
	for _, bad := range []any{nil, []any{int64(3)}, []any{int64(3), "e-1"}, []any{"3", "e1"}, []any{int64(3), "e1", int64(0)}} {
		if _, err := decodePosition(bad); err == nil {
			t.Errorf("decodePosition(%#v) accepted it", bad)
		}
	}
}

// FuzzDecodeHistory: any reply, however broken, is refused or decoded
// into a valid position and frames that are the entries less their
// expiry times, without panicking.
func FuzzDecodeHistory(f *testing.F) {
	f.Add(int64(7), "abc", int64(0), "1712345678901{\"#\":[\"p\",\"ch\",1,{\"offset\":7,\"epoch\":\"abc\"}]}")
	f.Add(int64(0), "e", int64(1), "")
	f.Add(int64(2), "e", int64(0), "0000000000000x\n0000000000000y")
	f.Add(int64(-5), "", int64(3), "\n\n")
	f.Fuzz(func(t *testing.T, top int64, epoch string, lost int64, entries string) {
		var es []string
		if entries != "" {
			es = strings.Split(entries, "\n")
		}
		frames, pos, gone, err := decodeHistory(historyReply(top, epoch, lost, es...))
		if err != nil {
			return
		}
		if !protocol.ValidEpoch(pos.Epoch) || pos.Offset != uint64(top) || top < 0 {
			t.Fatalf("decoded position %v from %d %q", pos, top, epoch)
		}
		if gone {
			if lost != 1 || len(es) != 0 || frames != nil {
				t.Fatalf("lost with %d entries, lost=%d", len(es), lost)
			}
			return
		}
		if lost != 0 || len(frames) != len(es) {
			t.Fatalf("%d frames from %d entries, lost=%d", len(frames), len(es), lost)
		}
		for i, e := range es {
			if e[:expiryDigits]+string(frames[i]) != e || strings.Trim(e[:expiryDigits], "0123456789") != "" {
				t.Fatalf("entry %q gave frame %q", e, frames[i])
			}
		}
	})
}
