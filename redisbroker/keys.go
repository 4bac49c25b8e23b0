package redisbroker

import (
	"crypto/rand"
	"strings"
	"sync"
)

// The kinds of the keys a Broker keeps for a channel (see channelKey).
const (
	kindPresence = "presence:"
	kindHistory  = "history:"
	kindMeta     = "meta:"
	kindNode     = "node:" // not per channel: a process's presence lease
)

// channelKey returns the key of kind for channel:
//
//	Prefix + kind + "{" + tag + "}" + channel
//
// where tag is a short string that Redis Cluster hashes to the slot of
// the channel's pub/sub name (Prefix + channel). The history script
// publishes the frames it stores, and Redis Cluster lets a script publish
// (SPUBLISH) only to a shard channel of the slot of its keys, so the keys
// of a channel and its pub/sub name must share a slot, whatever the
// channel's name holds: braces of its own, which would make a hash tag of
// "{channel}" hash only a part of it, or none. A Prefix with a hash tag
// of its own puts everything on its slot, and the tag here changes
// nothing (checkPrefix keeps a '{' in the Prefix from opening a tag that
// only ends after it).
func (b *Broker) channelKey(kind, channel string) string {
	p := b.opts.Prefix
	tag := slotTag(slot(p + channel))
	var sb strings.Builder
	sb.Grow(len(p) + len(kind) + len(tag) + 2 + len(channel))
	sb.WriteString(p)
	sb.WriteString(kind)
	sb.WriteByte('{')
	sb.WriteString(tag)
	sb.WriteByte('}')
	sb.WriteString(channel)
	return sb.String()
}

// nodeKey returns the key of a presence lease.
func (b *Broker) nodeKey(lease string) string { return b.opts.Prefix + kindNode + lease }

// tagAlphabet makes slot tags and leases: letters and digits, readable in
// redis-cli and never a brace.
const tagAlphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// slotTags holds, for every slot, the shortest string of tagAlphabet that
// hashes to it, shortest first and then in alphabet order. Strings of up
// to three characters reach all 16,384 slots (TestSlotTags); the table
// takes 64 KiB and a few milliseconds, once, when a Broker first needs a
// channel's key.
var slotTags = sync.OnceValue(func() *[16384][4]byte {
	var t [16384][4]byte // [0]: the length; [1:]: the characters
	found := 0
	var buf [3]byte
	for n, count := 1, len(tagAlphabet); n <= len(buf) && found < len(t); n, count = n+1, count*len(tagAlphabet) {
		for i := range count {
			for j, x := n-1, i; j >= 0; j, x = j-1, x/len(tagAlphabet) {
				buf[j] = tagAlphabet[x%len(tagAlphabet)]
			}
			if s := slot(string(buf[:n])); t[s][0] == 0 {
				t[s][0] = byte(n)
				copy(t[s][1:], buf[:n])
				found++
			}
		}
	}
	return &t
})

// slotTag returns a hash tag of slot s.
func slotTag(s uint16) string {
	e := &slotTags()[s]
	return string(e[1 : 1+e[0]])
}

// checkPrefix reports what is wrong with a Prefix, or "". A '{' in it
// must open a hash tag that closes within it, such as "{app}:": one left
// open would take in the rest of every key and channel name, and Redis
// Cluster would then hash a channel's keys and its pub/sub name apart.
func checkPrefix(p string) string {
	i := strings.IndexByte(p, '{')
	if i < 0 {
		return ""
	}
	if j := strings.IndexByte(p[i+1:], '}'); j <= 0 {
		return "must close the hash tag its first '{' opens, with at least one character inside, such as {app}:"
	}
	return ""
}

// newLease returns a random presence lease: 12 characters of
// tagAlphabet, 71 bits.
func newLease() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = tagAlphabet[int(b[i])%len(tagAlphabet)]
	}
	return string(b[:])
}
