package redisbroker

import (
	"encoding/binary"
	"strings"
)

// A message in Redis is a 9-byte header followed by one client frame,
// unchanged, or by several:
//
//	byte 0     version: 1, one frame; 2, several frames; 3, one frame
//	           with its position in the channel's history
//	bytes 1-8  origin: the publishing Broker's random id
//	bytes 9-   version 1 and 3: the frame, as the hub encoded it for
//	           clients (3: with the position the history script gave it)
//	           version 2: frames, each preceded by its length as a uvarint
//
// The origin lets a Broker drop its own publishes when Redis echoes them
// back (it is subscribed to the channels it has local interest in, and the
// hub has delivered those publishes locally already). Version 2 carries
// publishes to one channel that were queued together, in order: one Redis
// command instead of many for a busy channel. Version 3 is published by
// the history script (PublishHistory), and goes to every interested
// process, the publisher included: the hub delivers a publish with history
// only when it comes back, in the order of its offsets.
const (
	versionSingle  = 1
	versionBatch   = 2
	versionHistory = 3
	headerLen      = 9
)

type originID [8]byte

func appendPayload(dst []byte, origin originID, frame []byte) []byte {
	return append(appendHeader(dst, versionSingle, origin), frame...)
}

// appendHeader appends the header of a message of version.
func appendHeader(dst []byte, version byte, origin originID) []byte {
	dst = append(dst, version)
	return append(dst, origin[:]...)
}

// appendBatch appends a version 2 message of frames.
func appendBatch(dst []byte, origin originID, frames ...[]byte) []byte {
	dst = appendHeader(dst, versionBatch, origin)
	for _, f := range frames {
		dst = binary.AppendUvarint(dst, uint64(len(f)))
		dst = append(dst, f...)
	}
	return dst
}

// decodePayload checks a message from Redis and returns its origin and
// the part after the header. It reports false for anything this package
// did not write, including a version 2 message that does not split into
// frames exactly.
func decodePayload(p string) (origin originID, version byte, body string, ok bool) {
	if len(p) < headerLen || p[0] < versionSingle || p[0] > versionHistory {
		return origin, 0, "", false
	}
	copy(origin[:], p[1:headerLen])
	version, body = p[0], p[headerLen:]
	if version == versionBatch {
		for rest := body; len(rest) > 0; {
			n, w := uvarint(rest)
			if w <= 0 || n > uint64(len(rest)-w) {
				return origin, 0, "", false
			}
			rest = rest[w+int(n):]
		}
	}
	return origin, version, body, true
}

// splitFrame splits the first frame off a version 2 body that
// decodePayload accepted.
func splitFrame(body string) (frame, rest string) {
	n, w := uvarint(body)
	end := w + int(n)
	return body[w:end], body[end:]
}

// uvarint is binary.Uvarint for a string.
func uvarint(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		b := s[i]
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				return 0, -(i + 1) // overflow
			}
			return x | uint64(b)<<shift, i + 1
		}
		x |= uint64(b&0x7f) << shift
		shift += 7
	}
	return 0, 0
}

// slot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of the
// key, or of its hash tag, modulo 16384, as Redis computes it. Sharded
// subscriptions are grouped by slot because SSUBSCRIBE refuses channels of
// different slots in one command (CROSSSLOT).
func slot(key string) uint16 {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc & 16383
}
