// Package history keeps channels' recent publications in memory: a
// bounded ring per channel, each entry kept for a time, and the channel's
// position (offset and epoch). The hub uses it when it runs alone; the TCP
// broker's server uses it for the whole cluster.
//
// A channel's offsets grow by one per publication within an epoch. The
// epoch is made when the store first sees the channel and changes only
// when the store has forgotten it: a channel idle for IdleTTL, or a new
// store (a restart). A reader can then tell "nothing missed" from "gap".
package history

import (
	"crypto/rand"
	"errors"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

// ErrLost reports a position the store cannot continue from: another
// epoch, or publications after it no longer kept.
var ErrLost = errors.New("history: position lost")

// IdleTTL is how long a channel's position is kept after its last use:
// longer than any history TTL, so that an idle channel whose entries have
// expired keeps its epoch (nothing was missed).
const IdleTTL = 24 * time.Hour

// Store is safe for concurrent use.
type Store struct {
	now func() time.Time

	mu      sync.Mutex // protects the field below
	streams map[string]*stream
}

type stream struct {
	epoch string
	top   uint64
	size  int // the most entries kept
	// entries is a ring of up to size slots, grown as publications come
	// (and dropped by Sweep once empty): a channel that is read but
	// seldom published to must not cost size slots. The TCP broker's
	// server keeps the history of every channel of a cluster, and every
	// subscribe to a channel with history reads it.
	entries []entry
	head    int // index of the oldest entry
	n       int // entries in use
	used    time.Time
}

type entry struct {
	offset  uint64
	frame   []byte
	expires time.Time
}

// New returns an empty Store.
func New() *Store { return &Store{now: time.Now, streams: make(map[string]*stream)} }

// NewEpoch returns a fresh random epoch.
func NewEpoch() string {
	const letters = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [12]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b[:])
}

func (s *Store) streamLocked(channel string, size int, now time.Time) *stream {
	size = max(size, 1)
	st := s.streams[channel]
	if st == nil || now.Sub(st.used) > IdleTTL {
		st = &stream{epoch: NewEpoch(), size: size}
		s.streams[channel] = st
	}
	if st.size != size {
		st.resize(size)
	}
	st.used = now
	return st
}

// resize keeps the newest entries that fit size.
func (st *stream) resize(size int) {
	st.size = size
	for st.n > size {
		st.dropOldest()
	}
	if len(st.entries) > size {
		st.regrow(size)
	}
}

// regrow moves the entries, oldest first, into a ring of slots slots.
func (st *stream) regrow(slots int) {
	kept := make([]entry, slots)
	for i := range st.n {
		kept[i] = *st.at(i)
	}
	st.entries, st.head = kept, 0
}

func (st *stream) dropOldest() {
	*st.at(0) = entry{} // the frame can go now
	st.head = (st.head + 1) % len(st.entries)
	st.n--
}

func (st *stream) at(i int) *entry { return &st.entries[(st.head+i)%len(st.entries)] }

// expire drops the entries whose time is up; they are the oldest.
func (st *stream) expire(now time.Time) {
	for st.n > 0 && !now.Before(st.at(0).expires) {
		st.dropOldest()
	}
}

// Append gives frame, a publish frame of channel, the channel's next
// offset, keeps it (at most size entries, each for ttl), and returns it
// with its position as the fourth element.
func (s *Store) Append(channel string, frame []byte, size int, ttl time.Duration) ([]byte, protocol.Position) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streamLocked(channel, size, now)
	st.top++
	pos := protocol.Position{Offset: st.top, Epoch: st.epoch}
	pf := protocol.AppendPosition(frame, pos)
	switch {
	case st.n == st.size:
		st.dropOldest()
	case st.n == len(st.entries):
		// Doubling: a full ring of size slots costs what it did when
		// allocated at once, plus copies of half as many entries.
		st.regrow(min(st.size, max(4, 2*len(st.entries))))
	}
	*st.at(st.n) = entry{offset: st.top, frame: pf, expires: now.Add(ttl)}
	st.n++
	return pf, pos
}

// Read returns channel's kept frames after since, oldest first, at most
// limit of them (0: all), and the channel's position. A zero since asks
// for the newest limit frames. A since in another epoch, or from before
// what is kept, is ErrLost (with the position).
func (s *Store) Read(channel string, since protocol.Position, limit, size int) ([][]byte, protocol.Position, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streamLocked(channel, size, now)
	st.expire(now)
	top := protocol.Position{Offset: st.top, Epoch: st.epoch}
	from := 0 // index of the first entry to return
	if since != (protocol.Position{}) {
		oldest := st.top + 1 // the offset of the oldest kept entry
		if st.n > 0 {
			oldest = st.at(0).offset
		}
		if since.Epoch != st.epoch || since.Offset > st.top || since.Offset+1 < oldest {
			return nil, top, ErrLost
		}
		from = st.n - int(st.top-since.Offset)
	}
	to := st.n
	if limit > 0 {
		if since == (protocol.Position{}) {
			from = max(0, st.n-limit)
		} else {
			to = min(st.n, from+limit)
		}
	}
	frames := make([][]byte, 0, to-from)
	for i := from; i < to; i++ {
		frames = append(frames, st.at(i).frame)
	}
	return frames, top, nil
}

// Sweep drops expired entries and forgets channels idle for IdleTTL. The
// owner calls it now and then; reads and appends expire lazily too.
func (s *Store) Sweep() {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch, st := range s.streams {
		if now.Sub(st.used) > IdleTTL {
			delete(s.streams, ch)
			continue
		}
		st.expire(now)
		if st.n == 0 {
			st.entries, st.head = nil, 0 // an idle channel keeps its position only
		}
	}
}
