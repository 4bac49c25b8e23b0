package redisbroker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/history"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// History in Redis (see the package documentation for the layout): per
// channel, a list of its kept publications, oldest first, and a hash of
// its position, both in the slot of the channel's pub/sub name (see
// channelKey). Each list entry is the publication's expiry time, in
// milliseconds of Redis's clock, as expiryDigits digits, followed by the
// frame as delivered, with its position. The list always holds the newest
// offsets of the epoch without a hole, the last one the position's, so
// the offset of an entry is its place from the end: reading after an
// offset is one LRANGE.

// expiryDigits is the width of an entry's expiry time: milliseconds of
// Unix time have 13 digits until the year 2286.
const expiryDigits = 13

// historyOpen is the start of both history scripts: it finds the
// channel's epoch, making it (from the candidate given, and with an empty
// list) when the channel has none; keeps the newest Size entries; drops
// the expired ones from the front (the oldest, as internal/history does:
// an entry that outlives an older one waits for it); and keeps the
// position for the meta TTL after this use. Time is Redis's clock, so
// the processes' clocks need not agree.
//
//	KEYS[1] the entries (a list)  KEYS[2] the position (a hash: e epoch, o offset)
//	ARGV[1] an epoch candidate  ARGV[2] Size  ARGV[3] the meta TTL in ms
const historyOpen = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
	epoch = ARGV[1]
	redis.call('DEL', KEYS[1])
	redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
end
local size = tonumber(ARGV[2])
redis.call('LTRIM', KEYS[1], -size, -1)
while true do
	local head = redis.call('LINDEX', KEYS[1], 0)
	if not head or tonumber(string.sub(head, 1, 13)) > now then break end
	redis.call('LPOP', KEYS[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
`

// publishHistoryScript gives a publication the channel's next offset,
// keeps it, and publishes it, atomically, so the processes get a
// channel's publications in the order of their offsets.
//
//	ARGV[4] the frame without its closing "]}"  ARGV[5] TTL in ms
//	ARGV[6] "publish" or "spublish"  ARGV[7] the pub/sub channel  ARGV[8] the message header
//
// It returns {offset, epoch}.
var publishHistoryScript = newScript(historyOpen + `
local top = redis.call('HINCRBY', KEYS[2], 'o', 1)
local frame = ARGV[4] .. ',{"offset":' .. string.format('%d', top) .. ',"epoch":"' .. epoch .. '"}]}'
local ttl = tonumber(ARGV[5])
redis.call('RPUSH', KEYS[1], string.format('%013d', math.min(now + ttl, 9999999999999)) .. frame)
redis.call('LTRIM', KEYS[1], -size, -1)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call(ARGV[6], ARGV[7], ARGV[8] .. frame)
return {top, epoch}`)

// readHistoryScript reads the entries after a position, as
// internal/history.Store.Read does.
//
//	ARGV[4] "1" when a position is given  ARGV[5] its offset  ARGV[6] its epoch
//	ARGV[7] limit, 0 for all
//
// It returns {offset, epoch, lost (0 or 1), entries...}.
var readHistoryScript = newScript(historyOpen + `
local top = tonumber(redis.call('HGET', KEYS[2], 'o'))
local n = redis.call('LLEN', KEYS[1])
local given = ARGV[4] == '1'
local from, to, limit = 0, n, tonumber(ARGV[7])
if given then
	local since = tonumber(ARGV[5])
	if ARGV[6] ~= epoch or since > top or since + 1 < top - n + 1 then
		return {top, epoch, 1}
	end
	from = n - (top - since)
end
if limit > 0 then
	if given then to = math.min(n, from + limit) else from = math.max(0, n - limit) end
end
local out = {top, epoch, 0}
if from < to then
	local entries = redis.call('LRANGE', KEYS[1], from, to - 1)
	for i = 1, #entries do out[#out + 1] = entries[i] end
end
return out`)

// historyArgs returns the arguments the history scripts share: an epoch
// candidate, Size (at least one, as internal/history keeps) and the meta
// TTL: internal/history.IdleTTL, or the entries' TTL if longer, so an
// idle channel keeps its epoch while its entries could still be read.
func historyArgs(opts hub.HistoryOptions) []any {
	meta := max(history.IdleTTL, opts.TTL)
	return []any{history.NewEpoch(), max(opts.Size, 1), meta.Milliseconds()}
}

var errNotPublish = errors.New("redisbroker: PublishHistory: not a publish frame")

// PublishHistory gives frame, a publish frame of channel, the channel's
// next offset, keeps it (at most opts.Size, each for opts.TTL) and
// publishes it with its position to every process interested in channel,
// this one included, in one script: one round trip, atomic, so every
// process gets a channel's publications in the order of their offsets.
//
// It returns the position, or an error when Redis did not run the script:
// ErrUnavailable at once while Redis is known to be unreachable (as
// Publish), or wrapped around go-redis's error. The script is never
// retried, which could publish twice; a connection that breaks after
// Redis ran it and before its answer arrives is the one case of an error
// for a publication that was made.
func (b *Broker) PublishHistory(ctx context.Context, channel string, frame []byte, opts hub.HistoryOptions) (hub.Position, error) {
	if !bytes.HasSuffix(frame, []byte("]}")) {
		return hub.Position{}, errNotPublish
	}
	if err := b.pub.admit(); err != nil {
		b.counters.refused.Add(1)
		return hub.Position{}, err
	}
	keys := []string{b.channelKey(kindHistory, channel), b.channelKey(kindMeta, channel)}
	header := appendHeader(make([]byte, 0, headerLen), versionHistory, b.id)
	args := append(historyArgs(opts),
		frame[:len(frame)-2], max(opts.TTL.Milliseconds(), 1),
		b.publishCmd, b.opts.Prefix+channel, header)
	reply, err := b.eval(b.callCtx(ctx), publishHistoryScript, false, keys, args...)
	if err != nil {
		b.counters.refused.Add(1)
		if !ctxErr(err) && !isRedisError(err) {
			b.pub.markDown() // as a failed pipeline does: Publish waits for a health check
		}
		return hub.Position{}, b.failed("publish with history", err)
	}
	pos, err := decodePosition(reply)
	if err != nil {
		return hub.Position{}, err
	}
	b.counters.published.Add(1)
	return pos, nil
}

// History returns channel's kept frames after since, oldest first, at most
// limit (0: all), and the channel's position, as internal/history does: a
// zero since asks for the newest limit frames; a since in another epoch,
// after the position, or older than what is kept returns
// hub.ErrPositionLost with the position. The position is made on the
// first call (offset 0 of a new epoch). One round trip.
func (b *Broker) History(ctx context.Context, channel string, since hub.Position, limit int, opts hub.HistoryOptions) ([][]byte, hub.Position, error) {
	if b.stopping() {
		return nil, hub.Position{}, ErrClosed
	}
	keys := []string{b.channelKey(kindHistory, channel), b.channelKey(kindMeta, channel)}
	given := "0"
	if since != (hub.Position{}) {
		given = "1"
	}
	args := append(historyArgs(opts), given, strconv.FormatUint(since.Offset, 10), since.Epoch, max(limit, 0))
	reply, err := b.eval(b.callCtx(ctx), readHistoryScript, true, keys, args...)
	if err != nil {
		return nil, hub.Position{}, b.failed("history", err)
	}
	frames, top, lost, err := decodeHistory(reply)
	if err != nil {
		return nil, hub.Position{}, err
	}
	if lost {
		return nil, top, hub.ErrPositionLost
	}
	return frames, top, nil
}

var errBadReply = errors.New("redisbroker: unexpected reply from a history script")

// decodePosition reads the reply of publishHistoryScript.
func decodePosition(reply any) (hub.Position, error) {
	r, ok := reply.([]any)
	if !ok || len(r) != 2 {
		return hub.Position{}, errBadReply
	}
	return position(r[0], r[1])
}

func position(offset, epoch any) (hub.Position, error) {
	o, ok1 := offset.(int64)
	e, ok2 := epoch.(string)
	if !ok1 || !ok2 || o < 0 || !protocol.ValidEpoch(e) {
		return hub.Position{}, fmt.Errorf("%w: position %v, %v", errBadReply, offset, epoch)
	}
	return hub.Position{Offset: uint64(o), Epoch: e}, nil
}

// decodeHistory reads the reply of readHistoryScript: the position,
// whether since was lost, and the frames of the entries, each a copy
// without its expiry time.
func decodeHistory(reply any) (frames [][]byte, top hub.Position, lost bool, err error) {
	r, ok := reply.([]any)
	if !ok || len(r) < 3 {
		return nil, top, false, errBadReply
	}
	if top, err = position(r[0], r[1]); err != nil {
		return nil, top, false, err
	}
	switch r[2] {
	case int64(0):
	case int64(1):
		if len(r) != 3 {
			return nil, top, false, errBadReply
		}
		return nil, top, true, nil
	default:
		return nil, top, false, errBadReply
	}
	frames = make([][]byte, 0, len(r)-3)
	for _, e := range r[3:] {
		s, ok := e.(string)
		if !ok {
			return nil, top, false, errBadReply
		}
		f, ok := entryFrame(s)
		if !ok {
			return nil, top, false, fmt.Errorf("%w: a history entry without its expiry time", errBadReply)
		}
		frames = append(frames, f)
	}
	return frames, top, false, nil
}

// entryFrame returns a copy of the frame of a history entry: the entry
// without its expiry time.
func entryFrame(e string) ([]byte, bool) {
	if len(e) <= expiryDigits {
		return nil, false
	}
	for i := range expiryDigits {
		if e[i] < '0' || e[i] > '9' {
			return nil, false
		}
	}
	return []byte(e[expiryDigits:]), true
}
