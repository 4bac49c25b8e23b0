package redisbroker

import (
	"strings"
	"testing"
)

// Every slot has a tag of at most three letters and digits that hashes to
// it.
func TestSlotTags(t *testing.T) {
	t.Parallel()
	for s := range uint16(16384) {
		tag := slotTag(s)
		if len(tag) == 0 || len(tag) > 3 || strings.Trim(tag, tagAlphabet) != "" {
			t.Fatalf("slotTag(%d) = %q", s, tag)
		}
		if got := slot(tag); got != s {
			t.Fatalf("slotTag(%d) = %q, which hashes to %d", s, tag, got)
		}
	}
}

// A channel's keys hash to the slot of its pub/sub name, whatever the
// channel and the prefix hold, so the history script may publish to it on
// Redis Cluster.
func TestChannelKeySlot(t *testing.T) {
	t.Parallel()
	channels := []string{"", "room", "{", "}", "{}", "}{", "{x}", "a{b}c", "a}b{c}", "{}{x}", "\x00u:alice",
		"\x00n:{x}", "😀", "line\nbreak", "room:lobby/presence"}
	for _, prefix := range []string{"clusterws:", "{app}:", "a{b}c:", "", "}x", "x}{y}"} {
		if why := checkPrefix(prefix); why != "" {
			t.Fatalf("checkPrefix(%q): %s", prefix, why)
		}
		b := &Broker{opts: Options{Prefix: prefix}}
		for _, ch := range channels {
			want := slot(prefix + ch)
			for _, kind := range []string{kindPresence, kindHistory, kindMeta} {
				key := b.channelKey(kind, ch)
				if got := slot(key); got != want {
					t.Errorf("prefix %q, channel %q: %s hashes to %d, the channel to %d", prefix, ch, key, got, want)
				}
				if !strings.HasPrefix(key, prefix+kind+"{") || !strings.HasSuffix(key, "}"+ch) {
					t.Errorf("channelKey(%q, %q) = %q", kind, ch, key)
				}
			}
		}
	}
}

// A prefix whose '{' opens no hash tag within it is refused: it would
// hash a channel's keys and its pub/sub name apart.
func TestCheckPrefix(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"{", "app{", "a{}b", "{}", "x{y", "}{"} {
		if checkPrefix(bad) == "" {
			t.Errorf("checkPrefix(%q) accepted it", bad)
		}
	}
}

func TestNewLease(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool)
	for range 1000 {
		l := newLease()
		lease, user, ok := parseEntry(entry(l, "u"))
		if !ok || lease != l || user != "u" || seen[l] {
			t.Fatalf("lease %q: parsed %q %q %v, seen %v", l, lease, user, ok, seen[l])
		}
		seen[l] = true
	}
}
