package localbroker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/clusterws/clusterws-go/hub"
)

// Presence: the frames, the Server's table of every worker's members, and
// the Broker's methods. The package doc describes the protocol.

// presenceEncoder builds the typePresence frames of a sequence of
// changes: one frame per run of changes of the same channel (more past
// chunkSize), so the channel is written once per frame, not per change.
type presenceEncoder struct {
	chunker
	channel string
	started bool
}

func newPresenceEncoder() *presenceEncoder {
	return &presenceEncoder{chunker: chunker{typ: typePresence}}
}

func (e *presenceEncoder) add(channel string, leave bool, socket, user string) {
	if !e.started || channel != e.channel {
		e.cut()
		e.prefix = appendName(nil, channel)
		e.channel, e.started = channel, true
	}
	if leave {
		e.cur = appendName(append(e.room(1+2+len(socket)), opLeave), socket)
		return
	}
	e.cur = appendName(appendName(append(e.room(1+2+len(socket)+2+len(user)), opJoin), socket), user)
}

// parseChanges reads the changes that follow a typePresence payload's
// channel, in order. socket and user are views into p; a leave has no
// user.
func parseChanges(p []byte, fn func(leave bool, socket, user []byte)) error {
	for len(p) > 0 {
		op := p[0]
		if op != opJoin && op != opLeave {
			return errBadFrame
		}
		socket, rest, err := cut(p[1:])
		if err != nil {
			return err
		}
		var user []byte
		if op == opJoin {
			if user, rest, err = cut(rest); err != nil {
				return err
			}
		}
		fn(op == opLeave, socket, user)
		p = rest
	}
	return nil
}

// queryFrame asks for the members of channel.
func queryFrame(id uint32, channel string) []byte {
	f := appendHeader(nil, typeQuery, 4+2+len(channel))
	f = binary.BigEndian.AppendUint32(f, id)
	return appendName(f, channel)
}

// parseQuery reads a typeQuery payload: nothing may follow the channel.
func parseQuery(p []byte) (id uint32, channel []byte, err error) {
	if len(p) < 4 {
		return 0, nil, errBadFrame
	}
	channel, rest, err := cut(p[4:])
	if err != nil || len(rest) > 0 {
		return 0, nil, errBadFrame
	}
	return binary.BigEndian.Uint32(p), channel, nil
}

// membersEncoder builds the answer to a query: typeMembers frames, the
// last one marked so.
type membersEncoder struct{ chunker }

func newMembersEncoder(id uint32) *membersEncoder {
	prefix := append(binary.BigEndian.AppendUint32(nil, id), 0)
	return &membersEncoder{chunker{typ: typeMembers, prefix: prefix}}
}

func (e *membersEncoder) add(socket, user string) {
	e.cur = appendName(appendName(e.room(2+len(socket)+2+len(user)), socket), user)
}

// done returns the frames, at least one: an empty channel is answered too.
func (e *membersEncoder) done() [][]byte { return e.finish(1) }

// parseMembers reads a typeMembers payload. The members' strings are
// substrings of one allocation: an answer of 10,000 members costs a few
// allocations, not 20,000. The caller keeps them only until it returns
// them to Presence's caller.
func parseMembers(p []byte) (id uint32, last bool, members []hub.Member, err error) {
	if len(p) < 5 || p[4] > 1 {
		return 0, false, nil, errBadFrame
	}
	id, last = binary.BigEndian.Uint32(p), p[4] == 1
	for s := string(p[5:]); len(s) > 0; {
		var m hub.Member
		if m.SocketID, s, err = cut(s); err != nil {
			return 0, false, nil, err
		}
		if m.User, s, err = cut(s); err != nil {
			return 0, false, nil, err
		}
		members = append(members, m)
	}
	return id, last, members, nil
}

// members is one link's members of one channel: socket ID → user.
type members map[string]string

// presenceTable is the Server's record of presence: per channel, the
// members each link added. A link only ever changes its own members, so
// a late frame of a dead link cannot touch a live one's, and dropping a
// link costs one deletion per channel it has members in.
type presenceTable struct {
	mu sync.Mutex // protects channels and every link's members field
	// A channel's links are a slice, not a map: there is at most one per
	// worker, and most channels have a member or two, for whom a map
	// would cost more than the members.
	channels map[string][]linkMembers
}

// linkMembers is one link's members of a channel.
type linkMembers struct {
	l  *link
	ms members
}

func newPresenceTable() presenceTable {
	return presenceTable{channels: make(map[string][]linkMembers)}
}

// update applies a typePresence payload from l, in order. On a malformed
// payload the changes before the fault stay applied: the link is dropped
// for it, which removes them all.
func (t *presenceTable) update(l *link, p []byte) error {
	channel, changes, err := cut(p)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ms := l.members[string(channel)]
	err = parseChanges(changes, func(leave bool, socket, user []byte) {
		if leave {
			delete(ms, string(socket))
			return
		}
		if ms == nil {
			ms = t.addLocked(l, string(channel))
		}
		ms.set(socket, user)
	})
	if ms != nil && len(ms) == 0 {
		t.removeLocked(l, string(channel))
	}
	return err
}

// set records a member. Its socket ID and user share one allocation
// (e.g. 21 and 10 bytes take 32 instead of 24+16): a member costs its map
// slot and that.
func (ms members) set(socket, user []byte) {
	var b strings.Builder
	b.Grow(len(socket) + len(user))
	b.Write(socket)
	b.Write(user)
	s := b.String()
	ms[s[:len(socket)]] = s[len(socket):]
}

func (t *presenceTable) addLocked(l *link, channel string) members {
	ms := make(members)
	if l.members == nil {
		l.members = make(map[string]members)
	}
	l.members[channel] = ms
	t.channels[channel] = append(t.channels[channel], linkMembers{l, ms})
	return ms
}

func (t *presenceTable) removeLocked(l *link, channel string) {
	delete(l.members, channel)
	links := t.channels[channel]
	if i := slices.IndexFunc(links, func(lm linkMembers) bool { return lm.l == l }); i >= 0 {
		links = slices.Delete(links, i, i+1)
	}
	if len(links) == 0 {
		delete(t.channels, channel)
	} else {
		t.channels[channel] = links
	}
}

// answer encodes the members of channel for query id, reading only that
// channel's maps. The encoding happens under the lock: a snapshot would
// cost as much, and then the encoding on top.
func (t *presenceTable) answer(id uint32, channel []byte) [][]byte {
	e := newMembersEncoder(id)
	t.mu.Lock()
	for _, lm := range t.channels[string(channel)] {
		for socket, user := range lm.ms {
			e.add(socket, user)
		}
	}
	t.mu.Unlock()
	return e.done()
}

// drop forgets all of l's members.
func (t *presenceTable) drop(l *link) {
	t.mu.Lock()
	for ch := range l.members {
		t.removeLocked(l, ch)
	}
	t.mu.Unlock()
}

var _ hub.PresenceBroker = (*Broker)(nil)

// UpdatePresence records changes of this process's members, in order, and
// sends them to the Server. It never blocks, so it ignores ctx. The
// changes are recorded even when it returns an error, and the whole record
// is sent again after every reconnect: while the link is down it returns
// ErrUnavailable, and when the changes do not fit the link's queue
// (Options.MaxPending) it returns ErrBacklog and drops the link, so that
// the reconnect sends them. A leave of a member not recorded changes
// nothing. Changes with a channel, socket ID or user over 65,535 bytes are
// skipped, neither recorded nor sent; the error then wraps
// hub.ErrChannelTooLong, hub.ErrInvalidSocketID or hub.ErrUserTooLong.
func (b *Broker) UpdatePresence(_ context.Context, changes []hub.PresenceChange) error {
	changes, skipped := validChanges(changes)
	e := newPresenceEncoder()
	for _, c := range changes {
		e.add(c.Channel, c.Leave, c.Member.SocketID, c.Member.User)
	}
	frames := e.done()

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	for _, c := range changes {
		b.recordLocked(c)
	}
	switch {
	case b.link == nil:
		return errors.Join(ErrUnavailable, skipped)
	case len(frames) > 0 && !b.link.q.push(frames...):
		// The Server would miss these changes for as long as the link
		// lives: a new link starts from the whole record.
		b.log.Warn("presence changes do not fit the link's queue; reconnecting to send them all again", "changes", len(changes), "max_pending", b.cfg.maxPending)
		_ = b.link.conn.Close()
		return errors.Join(ErrBacklog, skipped)
	}
	return skipped
}

// validChanges returns the changes that fit in link frames, and an error
// for those that do not.
func validChanges(changes []hub.PresenceChange) ([]hub.PresenceChange, error) {
	var valid []hub.PresenceChange
	var errs []error
	for i, c := range changes {
		var err error
		switch {
		case len(c.Channel) > maxName:
			err = hub.ErrChannelTooLong
		case len(c.Member.SocketID) > maxName:
			err = hub.ErrInvalidSocketID
		case len(c.Member.User) > maxName:
			err = hub.ErrUserTooLong
		}
		if err == nil {
			if valid != nil {
				valid = append(valid, c)
			}
			continue
		}
		if valid == nil { // the first bad one: copy the good ones so far
			valid = append(make([]hub.PresenceChange, 0, len(changes)-1), changes[:i]...)
		}
		errs = append(errs, fmt.Errorf("presence change %d skipped: %w", i, err))
	}
	if valid == nil {
		return changes, nil
	}
	return valid, errors.Join(errs...)
}

func (b *Broker) recordLocked(c hub.PresenceChange) {
	ms := b.presence[c.Channel]
	if c.Leave {
		delete(ms, c.Member.SocketID)
		if ms != nil && len(ms) == 0 {
			delete(b.presence, c.Channel)
		}
		return
	}
	if ms == nil {
		ms = make(members)
		b.presence[c.Channel] = ms
	}
	ms[c.Member.SocketID] = c.Member.User
}

// Presence returns the members of channel in every process, as the
// Server's record has them after the changes this Broker sent before the
// call (the link keeps their order). It waits for the answer until ctx
// ends, and returns ErrUnavailable while the link is down or breaks
// before the answer is in, and ErrBacklog when the link is too far behind
// to take the question.
func (b *Broker) Presence(ctx context.Context, channel string) ([]hub.Member, error) {
	if len(channel) > maxName {
		return nil, hub.ErrChannelTooLong
	}
	c := newCall(typeMembers, ErrUnavailable)
	if err := b.roundTrip(ctx, c, func(id uint32) []byte { return queryFrame(id, channel) }); err != nil {
		return nil, err
	}
	return c.members, nil
}

// answered takes a typeMembers frame's members to the query waiting for
// them. A query no one waits for any more (its ctx ended) is ignored.
func (b *Broker) answered(p []byte) error {
	id, last, ms, err := parseMembers(p)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.calls[id]
	switch {
	case !ok:
		return nil
	case c.answer != typeMembers:
		return errBadFrame
	}
	if c.members == nil {
		c.members = ms
	} else {
		c.members = append(c.members, ms...)
	}
	if last {
		b.finishLocked(id, c, nil)
	}
	return nil
}
