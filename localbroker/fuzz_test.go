package localbroker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/history"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// fuzzLimit replaces maxFrame: the check is the same, without 64 MiB
// allocations for the lengths the fuzzer makes up.
const fuzzLimit = 1 << 16

// seedFrames is one valid frame of every type; the first five are the
// hello, welcome, sub, unsub and ack (FuzzBrokerStream's pending ack).
func seedFrames() [][]byte {
	sub := appendHeader(nil, typeSub, 4+2+1+2+4)
	sub = binary.BigEndian.AppendUint32(sub, 7)
	sub = appendName(appendName(sub, "a"), "news")
	unsub := appendName(appendHeader(nil, typeUnsub, 2+1), "a")
	ack := binary.BigEndian.AppendUint32(appendHeader(nil, typeAck, 4), 7)
	joins := newPresenceEncoder()
	joins.add("a", false, "s1", "alice")
	joins.add("a", false, "s2", "")
	joins.add("a", true, "s1", "")
	joins.add("b", true, "s9", "")
	answer := newMembersEncoder(7)
	answer.add("s1", "alice")
	answer.add("s2", "")
	answered := answer.done()
	more := bytes.Clone(answered[0]) // the same, with more to come
	more[headerLen+4] = 0
	return append([][]byte{
		helloFrame(1, "secret"),
		welcomeFrame,
		sub,
		unsub,
		ack,
		pubFrame("a", []byte(`{"#":["p","a",1]}`)),
		pubFrame("", nil),
		pingFrame,
		pongFrame,
		queryFrame(7, "a"),
		queryFrame(8, ""),
		more,
		newMembersEncoder(8).done()[0],
	}, append(append(append(joins.done(), answered...), historySeeds()...), directSeeds()...)...)
}

// directSeeds are the direct links' frames, after the history seeds: a
// relay to all (and so to the fuzzed server's peer, token 1), one that
// skips the peer, a barrier, a table, a removal, a sync, a pair link's
// hello, a confirmation and a recall.
func directSeeds() [][]byte {
	body := payload(pubFrame("a", []byte(`{"#":["p","a",3]}`)))
	other := payload(pubFrame("a", []byte(`{"#":["p","a",4]}`)))
	return [][]byte{
		append(relayHead(nil, len(body)), body...),
		append(relayHead([]uint64{1, 5}, len(other)), other...),
		barrierFrame(1, 9),
		tableFrame(true, &link{token: 1, addr: "127.0.0.1:1"}, &link{token: 3}),
		removeFrame(1),
		syncFrame,
		pairInitFrame(1, 9, "secret"),
		confirmFrame,
		recallFrame,
	}
}

// historySeeds are the history frames of seedFrames, from index 16 on:
// two keeps, two gets, and answers to FuzzBrokerStream's pending history
// call 8 (more, done, lost, backlog).
func historySeeds() [][]byte {
	top := protocol.Position{Offset: 3, Epoch: "ep"}
	more := newEntriesEncoder(8, top)
	more.add([]byte(`{"#":["p","a",1,{"offset":2,"epoch":"ep"}]}`))
	more.add(nil)
	done := newEntriesEncoder(8, top)
	done.add([]byte(`{"#":["p","a",2,{"offset":3,"epoch":"ep"}]}`))
	return [][]byte{
		keepFrame(9, "a", 10, time.Minute, []byte(`{"#":["p","a",1]}`)),
		keepFrame(10, "b", 1, time.Second, []byte(`{"#":["p","b",2]}`)),
		getFrame(11, "a", hub.Position{}, 0, 10),
		getFrame(12, "a", hub.Position{Offset: 1, Epoch: "e"}, 5, 10),
		more.finish(histMore)[0],
		done.finish(histDone)[0],
		newEntriesEncoder(8, top).finish(histLost)[0],
		newEntriesEncoder(8, top).finish(histBacklog)[0],
	}
}

// addSeeds adds each seed frame alone, all in a row, and some malformed
// ones.
func addSeeds(f *testing.F, prefix []byte) {
	frames := seedFrames()
	for _, fr := range frames {
		f.Add(append(bytes.Clone(prefix), fr...))
	}
	f.Add(append(bytes.Clone(prefix), bytes.Join(frames[2:], nil)...))
	toServer := [][]byte{frames[2], frames[3], frames[5], frames[13], frames[14], frames[9], frames[10], frames[7],
		frames[16], frames[18], frames[2], frames[16], frames[17], frames[19], frames[18]}
	f.Add(append(bytes.Clone(prefix), bytes.Join(toServer, nil)...))
	toWorker := [][]byte{frames[4], frames[5], frames[11], frames[12], frames[15], frames[7], frames[20], frames[21], frames[22]}
	f.Add(append(bytes.Clone(prefix), bytes.Join(toWorker, nil)...))
	for _, bad := range [][]byte{
		{0, 0, 0, 0},                                    // no type
		{0, 0, 0, 9, typePub, 0, 1},                     // truncated
		{0, 0, 0, 3, typePub, 0, 5},                     // name longer than the frame
		{0, 0, 0, 4, typeAck, 0, 0},                     // short ack
		{0, 0, 0, 1, 'Z'},                               // unknown type
		{0xff, 0xff, 0xff, 0xff, 'P'},                   // too big
		frameOf(typePresence, 0, 1, 'a', '*', 0),        // unknown change
		frameOf(typePresence, 0, 1, 'a', '+', 0, 0, 0),  // a join without its user's length
		frameOf(typeQuery, 0, 0, 0, 1, 0, 0, 'x'),       // bytes after the channel
		frameOf(typeMembers, 0, 0, 0, 7, 2),             // last flag not 0 or 1
		frameOf(typeMembers, 0, 0, 0, 7, 1, 0, 0, 0),    // a socket without its user
		keepFrame(9, "a", 0, time.Minute, []byte("]}")), // size 0
		keepFrame(9, "a", 1, time.Minute, []byte("]")),  // not a publish frame
		frameOf(typeGet, append(payload(getFrame(11, "a", hub.Position{}, 0, 10)), 0)...),         // bytes after the size
		frameOf(typeEntries, 0, 0, 0, 8, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),                         // unknown status
		frameOf(typeEntries, 0, 0, 0, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 'x'),        // an entry overrunning
		frameOf(typeEntries, 0, 0, 0, 8, histLost, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'x'), // lost, with an entry
		newEntriesEncoder(7, protocol.Position{}).finish(1)[0],                                    // an answer of the wrong type for query 7
	} {
		f.Add(append(bytes.Clone(prefix), bad...))
	}
}

// frameOf is a frame of type typ with payload p, well formed or not.
func frameOf(typ byte, p ...byte) []byte { return append(appendHeader(nil, typ, len(p)), p...) }

// FuzzReadFrame checks the decoders on any bytes: they never panic, what
// they accept re-encodes to exactly the bytes they read, and a stream
// ends with io.EOF only between frames.
func FuzzReadFrame(f *testing.F) {
	addSeeds(f, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = fuzzLimit
		br := bufio.NewReader(bytes.NewReader(data))
		read := 0
		for {
			typ, fr, err := readFrame(br, limit)
			if err != nil {
				switch {
				case errors.Is(err, io.EOF):
					if read != len(data) {
						t.Fatalf("io.EOF after %d of %d bytes", read, len(data))
					}
				case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errBadFrame), errors.Is(err, errFrameTooBig):
					if read == len(data) {
						t.Fatalf("%v at the end of the stream", err)
					}
				default:
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !bytes.Equal(fr, data[read:read+len(fr)]) || len(fr) < headerLen || len(fr)-4 > limit ||
				int(binary.BigEndian.Uint32(fr)) != len(fr)-4 || fr[4] != typ {
				t.Fatalf("frame %q at %d does not match the stream", fr, read)
			}
			read += len(fr)
			checkNames(t, payload(fr))
			checkPresence(t, payload(fr))
			checkHistory(t, payload(fr))
		}
	})
}

// checkNames checks that cutName and parseNames take from p only what
// they return.
func checkNames(t *testing.T, p []byte) {
	if name, rest, err := cutName(p); err == nil {
		if got := append(appendName(nil, name), rest...); !bytes.Equal(got, p) {
			t.Fatalf("cutName(%q) = %q, %q", p, name, rest)
		}
	} else if len(p) >= 2 && len(p) >= 2+int(binary.BigEndian.Uint16(p)) {
		t.Fatalf("cutName(%q) refused a name: %v", p, err)
	}
	var names []byte
	if err := parseNames(p, func(n string) { names = appendName(names, n) }); err == nil && !bytes.Equal(names, p) {
		t.Fatalf("parseNames(%q) read %q", p, names)
	}
}

// checkPresence reads p as each presence payload and checks that what a
// decoder accepts re-encodes to p: nothing skipped, nothing made up.
func checkPresence(t *testing.T, p []byte) {
	if channel, changes, err := cut(p); err == nil {
		e := newPresenceEncoder()
		n := 0
		err := parseChanges(changes, func(leave bool, socket, user []byte) {
			if leave && user != nil {
				t.Fatalf("parseChanges(%q): a leave with a user", p)
			}
			e.add(string(channel), leave, string(socket), string(user))
			n++
		})
		if frames := e.done(); err == nil && n > 0 && (len(frames) != 1 || !bytes.Equal(payload(frames[0]), p)) {
			t.Fatalf("parseChanges(%q) re-encodes to %q", p, frames)
		}
	}
	if id, channel, err := parseQuery(p); err == nil && !bytes.Equal(payload(queryFrame(id, string(channel))), p) {
		t.Fatalf("parseQuery(%q) = %d, %q", p, id, channel)
	}
	if id, last, ms, err := parseMembers(p); err == nil {
		got := append(binary.BigEndian.AppendUint32(nil, id), 0)
		if last {
			got[4] = 1
		}
		for _, m := range ms {
			got = appendName(appendName(got, m.SocketID), m.User)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("parseMembers(%q) = %d, %v, %q", p, id, last, ms)
		}
	}
}

// checkHistory reads p as each history payload and checks that what a
// decoder accepts re-encodes to p.
func checkHistory(t *testing.T, p []byte) {
	if r, err := parseKeep(p); err == nil {
		got := keepFrame(r.id, string(r.channel), uint32(r.size), r.ttl, r.frame)
		if !bytes.Equal(payload(got), p) || r.size == 0 || r.ttl <= 0 || !isPublishFrame(r.frame) {
			t.Fatalf("parseKeep(%q) = %+v", p, r)
		}
	}
	if r, err := parseGet(p); err == nil {
		got := getFrame(r.id, string(r.channel), hub.Position(r.since), uint32(r.limit), uint32(r.size))
		if !bytes.Equal(payload(got), p) || r.size == 0 {
			t.Fatalf("parseGet(%q) = %+v", p, r)
		}
	}
	if a, err := parseEntries(p); err == nil {
		got := append(binary.BigEndian.AppendUint32(nil, a.id), a.status)
		got = appendName(binary.BigEndian.AppendUint64(got, a.top.Offset), a.top.Epoch)
		for _, f := range a.frames {
			got = append(binary.BigEndian.AppendUint32(got, uint32(len(f))), f...)
		}
		if !bytes.Equal(got, p) || len(a.frames) > 0 && a.status > histDone {
			t.Fatalf("parseEntries(%q) = %+v", p, a)
		}
	}
}

// isHello reports whether data starts with a hello the server admits:
// this version, any token, a peer address of at most maxPeerAddr bytes,
// the secret.
func isHello(data []byte, secret string) bool {
	if len(data) < headerLen {
		return false
	}
	n := int(binary.BigEndian.Uint32(data))
	if n < 1 || n > int(helloLimit(secret)) || len(data) < 4+n || data[4] != typeHello {
		return false
	}
	p := data[headerLen : 4+n]
	if len(p) < 1+tokenLen+2 || p[0] != version {
		return false
	}
	a := int(binary.BigEndian.Uint16(p[1+tokenLen:]))
	return a <= maxPeerAddr && len(p) >= 1+tokenLen+2+a && string(p[1+tokenLen+2+a:]) == secret
}

// fuzzServer is a Server without a listener, and two links: peer, which
// wants "a" and has the member p1 in it, and the link under test.
func fuzzServer(secret string) (s *Server, peer, l *link) {
	s = &Server{
		cfg:      config{secret: secret, handshake: time.Hour, maxPending: 1 << 30},
		log:      slog.New(slog.DiscardHandler),
		channels: make(map[string]map[*link]struct{}),
		procs:    make(map[uint64]*link),
		presence: newPresenceTable(),
		history:  history.New(),
	}
	s.histLocks.seed = maphash.MakeSeed()
	newLink := func(token uint64) *link {
		return &link{conn: nopConn{}, q: newSendQueue(1<<30, time.Hour), token: token, channels: make(map[string]struct{}), gone: make(chan struct{})}
	}
	peer, l = newLink(1), newLink(2)
	s.subscribe(peer, "a")
	e := newPresenceEncoder()
	e.add("a", false, "p1", "peer")
	if err := s.presence.update(peer, payload(e.done()[0])); err != nil {
		panic(err)
	}
	return s, peer, l
}

var peerMember = hub.Member{SocketID: "p1", User: "peer"}

// FuzzServerStream feeds any bytes to the server as one connection: the
// handshake admits exactly the streams that start with a right hello,
// and an admitted worker's frames are handled without panics; publishes
// are forwarded as they are, only to a link interested in their channel;
// the link's members are what its presence frames say, and its frames
// never touch another link's; every query gets one whole answer, in
// order; and nothing of the link is left once it is dropped.
func FuzzServerStream(f *testing.F) {
	const secret = "secret"
	addSeeds(f, helloFrame(1, secret))
	f.Add(helloFrame(1, "wrong"))
	f.Add([]byte{})
	f.Add(helloFrame(1, secret)[:7])
	f.Fuzz(func(t *testing.T, data []byte) {
		s, peer, l := fuzzServer(secret)
		br := bufio.NewReader(bytes.NewReader(data))
		_, _, ok := s.readHello(nopConn{}, br)
		if ok != isHello(data, secret) {
			t.Fatalf("handshake = %v", ok)
		}
		if !ok {
			return
		}
		want := make(map[string]members) // the link's members, from the frames handled
		type question struct {
			id      uint32
			members []hub.Member // the right answer
		}
		var queries []question
		type request struct { // a history request, and what its answer must say
			id      uint32
			keep    bool
			channel string
			top     uint64 // the channel's offset: keeps on it so far
			since   protocol.Position
		}
		var requests []request
		kept := make(map[string]uint64)
		relayed := make(map[string]bool) // the publishes relayed to all but listed workers, the peer not listed
		err := readLoop(l.conn, br, fuzzLimit, l.q, time.Hour, func(typ byte, f []byte) error {
			switch typ {
			case typeRelay:
				if p := payload(f); len(p) >= 2 {
					k := int(binary.BigEndian.Uint16(p))
					if len(p) >= 2+tokenLen*k {
						skipped := false
						for i := range k {
							skipped = skipped || binary.BigEndian.Uint64(p[2+tokenLen*i:]) == peer.token
						}
						if !skipped {
							relayed[string(p[2+tokenLen*k:])] = true
						}
					}
				}
			case typeKeep:
				if r, err := parseKeep(payload(f)); err == nil {
					kept[string(r.channel)]++
					requests = append(requests, request{id: r.id, keep: true, channel: string(r.channel), top: kept[string(r.channel)]})
				}
			case typeGet:
				if r, err := parseGet(payload(f)); err == nil {
					requests = append(requests, request{id: r.id, channel: string(r.channel), top: kept[string(r.channel)], since: r.since})
				}
			case typePresence:
				if channel, changes, err := cut(payload(f)); err == nil {
					ms := want[string(channel)]
					if ms == nil {
						ms = make(members)
						want[string(channel)] = ms
					}
					_ = parseChanges(changes, func(leave bool, socket, user []byte) {
						if leave {
							delete(ms, string(socket))
						} else {
							ms[string(socket)] = string(user)
						}
					})
				}
			case typeQuery:
				if id, channel, err := parseQuery(payload(f)); err == nil {
					q := question{id: id}
					for socket, user := range want[string(channel)] {
						q.members = append(q.members, hub.Member{SocketID: socket, User: user})
					}
					if string(channel) == "a" {
						q.members = append(q.members, peerMember)
					}
					queries = append(queries, q)
				}
			}
			return s.handle(l, typ, f)
		})
		if err == nil {
			t.Fatal("readLoop returned no error at the end of the stream")
		}
		for ch := range l.channels {
			if _, ok := s.channels[ch][l]; !ok {
				t.Fatalf("the link's %q is not in the server's map", ch)
			}
		}
		maps.DeleteFunc(want, func(_ string, ms members) bool { return len(ms) == 0 })
		if !maps.EqualFunc(l.members, want, maps.Equal) {
			t.Fatalf("the link's members are %v, want %v", l.members, want)
		}
		for ch, ms := range l.members {
			i := slices.IndexFunc(s.presence.channels[ch], func(lm linkMembers) bool { return lm.l == l })
			if i < 0 || len(ms) == 0 || !maps.Equal(s.presence.channels[ch][i].ms, ms) {
				t.Fatalf("the link's members of %q are not in the table, or empty", ch)
			}
		}
		for ch, links := range s.presence.channels {
			for _, lm := range links {
				if len(lm.ms) == 0 || lm.l != l && lm.l != peer {
					t.Fatalf("the table has %d members of %q for a link %p", len(lm.ms), ch, lm.l)
				}
			}
		}
		epochs := make(map[string]string) // of each channel's positions: one store, one epoch
		checkEpoch := func(ch, epoch string) {
			if e, ok := epochs[ch]; ok && e != epoch || epoch == "" {
				t.Fatalf("positions of %q in epochs %q and %q", ch, e, epoch)
			}
			epochs[ch] = epoch
		}
		var lastA uint64 // the offset of the last keep on "a" forwarded to peer
		for _, fr := range frames(t, peer.q) {
			ch, cf, err := cutName(payload(fr))
			if fr[4] != typePub || err != nil || ch != "a" {
				t.Fatalf("forwarded %q", fr)
			}
			if bytes.Contains(data, fr) || relayed[string(payload(fr))] {
				continue // a publish, as received or relayed
			}
			orig, pos, ok := unposition(cf)
			if !ok || !bytes.Contains(data, orig) || pos.Offset != lastA+1 {
				t.Fatalf("forwarded %q after offset %d", fr, lastA)
			}
			checkEpoch(ch, pos.Epoch)
			lastA = pos.Offset
		}
		if lastA != kept["a"] {
			t.Fatalf("forwarded %d keeps of %d on a", lastA, kept["a"])
		}
		var answer []hub.Member
		var entries [][]byte
		lastL := make(map[string]uint64) // the offset of the last keep forwarded to l, by channel
		for _, fr := range frames(t, l.q) {
			switch {
			case bytes.Equal(fr, pongFrame), fr[4] == typeAck && len(fr) == headerLen+4:
			case fr[4] == typePub: // a keep on a channel l wants, back to l too
				ch, cf, _ := cutName(payload(fr))
				orig, pos, ok := unposition(cf)
				if !ok || !bytes.Contains(data, orig) || pos.Offset <= lastL[ch] || pos.Offset > kept[ch] {
					t.Fatalf("forwarded %q to the link after offset %d", fr, lastL[ch])
				}
				checkEpoch(ch, pos.Epoch)
				lastL[ch] = pos.Offset
			case fr[4] == typeEntries:
				a, err := parseEntries(payload(fr))
				if err != nil || len(requests) == 0 || a.id != requests[0].id {
					t.Fatalf("answered %q (%v), want an answer to %v", fr, err, requests)
				}
				entries = append(entries, a.frames...)
				if a.status == histMore {
					continue
				}
				r := requests[0]
				checkEpoch(r.channel, a.top.Epoch)
				if a.top.Offset != r.top || r.keep && (a.status != histDone || len(entries) > 0) || a.status == histBacklog {
					t.Fatalf("request %+v answered %+v with %d entries", r, a, len(entries))
				}
				next := uint64(0) // the offset the next entry must have
				for _, e := range entries {
					pos, ok := protocol.FramePosition(e)
					if !ok || pos.Epoch != a.top.Epoch || pos.Offset > r.top || pos.Offset <= r.since.Offset && r.since != (protocol.Position{}) || next != 0 && pos.Offset != next {
						t.Fatalf("request %+v answered with %q", r, e)
					}
					next = pos.Offset + 1
				}
				entries, requests = nil, requests[1:]
			case fr[4] == typeMembers:
				id, last, ms, err := parseMembers(payload(fr))
				if err != nil || len(queries) == 0 || id != queries[0].id {
					t.Fatalf("answered %q (%v), want an answer to %v", fr, err, queries)
				}
				answer = append(answer, ms...)
				if !last {
					continue
				}
				sortMembers(answer)
				sortMembers(queries[0].members)
				if !slices.Equal(answer, queries[0].members) {
					t.Fatalf("query %d answered %v, want %v", id, answer, queries[0].members)
				}
				answer, queries = nil, queries[1:]
			default:
				t.Fatalf("answered %q", fr)
			}
		}
		if len(queries) > 0 || len(requests) > 0 {
			t.Fatalf("queries %v and requests %v unanswered", queries, requests)
		}
		s.drop(l)
		if len(s.channels) != 1 || len(s.channels["a"]) != 1 {
			t.Fatalf("interest left after the drop: %v", s.channels)
		}
		if len(s.presence.channels) != 1 || len(s.presence.channels["a"]) != 1 || len(l.members) != 0 {
			t.Fatalf("members left after the drop: %v", s.presence.channels)
		}
		if got := s.presence.answer(1, []byte("a")); len(got) != 1 {
			t.Fatalf("the peer's members take %d frames", len(got))
		} else if _, _, ms, _ := parseMembers(payload(got[0])); !slices.Equal(ms, []hub.Member{peerMember}) {
			t.Fatalf("the peer's members are %v after the link's frames", ms)
		}
	})
}

// FuzzBrokerStream feeds any bytes to a worker as its server's frames:
// no panics, every delivery is a publish of the stream, in order, and the
// pending query gets exactly the members of its answer's frames.
func FuzzBrokerStream(f *testing.F) {
	addSeeds(f, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		var delivered [][]byte
		acked := make(chan error, 1)
		q := newCall(typeMembers, ErrUnavailable)
		h := newCall(typeEntries, ErrUnavailable)
		q.done, h.done = make(chan error, 1), make(chan error, 1) // as roundTrip makes them
		b := &Broker{
			log:   slog.New(slog.DiscardHandler),
			acks:  map[uint32]*ackWait{7: {left: 1, done: acked}},
			calls: map[uint32]*call{7: q, 8: h},
			deliver: func(ch string, frame []byte) {
				delivered = append(delivered, pubFrame(ch, frame))
			},
		}
		var want []hub.Member // the members of query 7's answer, from the frames handled
		complete := false
		var wantFrames [][]byte // the entries of history call 8's answer, from the frames handled
		var wantErr error
		answered := false
		handle := func(typ byte, f []byte) error {
			if typ == typeMembers && !complete {
				if id, last, ms, err := parseMembers(payload(f)); err == nil && id == 7 {
					want = append(want, ms...)
					complete = last
				}
			}
			if typ == typeEntries && !answered {
				if a, err := parseEntries(payload(f)); err == nil && a.id == 8 {
					wantFrames = append(wantFrames, a.frames...)
					answered = a.status != histMore
					wantErr = map[byte]error{histLost: hub.ErrPositionLost, histBacklog: ErrBacklog}[a.status]
				}
			}
			return b.handle(typ, f)
		}
		if err := readLoop(nopConn{}, bufio.NewReader(bytes.NewReader(data)), fuzzLimit, newSendQueue(1<<30, time.Hour), time.Hour, handle); err == nil {
			t.Fatal("readLoop returned no error at the end of the stream")
		}
		inStreamOrder(t, data, delivered)
		select {
		case <-acked:
			if !bytes.Contains(data, seedFrames()[4]) {
				t.Fatal("acknowledged without the ack")
			}
		default:
		}
		select {
		case err := <-q.done:
			if err != nil || !complete || !slices.Equal(q.members, want) {
				t.Fatalf("query answered %v (%v), want %v", q.members, err, want)
			}
			if _, ok := b.calls[7]; ok {
				t.Fatal("the answered query is still pending")
			}
		default:
			if complete || !slices.Equal(q.members, want) {
				t.Fatalf("query pending with %v (complete %v), want %v", q.members, complete, want)
			}
		}
		select {
		case err := <-h.done:
			if err != wantErr || !answered || !slices.EqualFunc(h.frames, wantFrames, bytes.Equal) {
				t.Fatalf("history call answered %q (%v), want %q (%v)", h.frames, err, wantFrames, wantErr)
			}
			if _, ok := b.calls[8]; ok {
				t.Fatal("the answered history call is still pending")
			}
		default:
			if answered || !slices.EqualFunc(h.frames, wantFrames, bytes.Equal) {
				t.Fatalf("history call pending with %q (answered %v), want %q", h.frames, answered, wantFrames)
			}
		}
	})
}

// frames returns the frames queued in q, which may be queued in pieces,
// each checked to be whole.
func frames(t *testing.T, q *sendQueue) [][]byte {
	var out [][]byte
	br := bufio.NewReader(bytes.NewReader(bytes.Join(q.frames, nil)))
	for {
		typ, fr, err := readFrame(br, maxFrame)
		if err == io.EOF {
			return out
		}
		if err != nil || typ != fr[4] {
			t.Fatalf("queued a malformed frame %q: %v", fr, err)
		}
		out = append(out, fr)
	}
}

// unposition returns the frame that protocol.AppendPosition made cf of,
// and the position.
func unposition(cf []byte) (frame []byte, pos protocol.Position, ok bool) {
	pos, ok = protocol.FramePosition(cf)
	i := bytes.LastIndex(cf, []byte(`,{"offset":`))
	if !ok || i < 0 {
		return nil, pos, false
	}
	frame = append(bytes.Clone(cf[:i]), "]}"...)
	return frame, pos, bytes.Equal(protocol.AppendPosition(frame, pos), cf)
}

// nopConn stands for a connection whose reads come from elsewhere.
type nopConn struct{ net.Conn }

func (nopConn) SetDeadline(time.Time) error     { return nil }
func (nopConn) SetReadDeadline(time.Time) error { return nil }
func (nopConn) Write(p []byte) (int, error)     { return len(p), nil }
func (nopConn) RemoteAddr() net.Addr            { return &net.TCPAddr{} }

// FuzzPairStream feeds any bytes to a worker as a peer's frames on a
// pair link whose barrier came: no panics, every delivery is a publish of
// the stream, in order, the peer's interest is what its subs and unsubs
// say, and the pending sub counts the peer's ack once.
func FuzzPairStream(f *testing.F) {
	addSeeds(f, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		var delivered [][]byte
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b := &Broker{
			log: slog.New(slog.DiscardHandler), ctx: ctx,
			pairs: make(map[uint64]*pairLink),
			deliver: func(ch string, frame []byte) {
				delivered = append(delivered, pubFrame(ch, frame))
			},
		}
		w := &ackWait{left: 2, done: make(chan error, 1)}
		l := &pairLink{
			token: 1, id: 1, conn: nopConn{}, q: newSendQueue(1<<30, time.Hour),
			interest: make(map[string]struct{}), acks: map[uint32]*ackWait{7: w},
			released: make(chan struct{}), quit: make(chan struct{}),
		}
		l.release()
		b.pairs[1] = l
		want := make(map[string]struct{})
		acks := 0
		held := true
		handle := func(typ byte, f []byte) error {
			err := b.handlePair(l, &held, typ, f)
			// A malformed list is applied up to the fault, as the link ends.
			switch p := payload(f); {
			case typ == typeSub && len(p) >= 4:
				_ = parseNames(p[4:], func(ch string) { want[ch] = struct{}{} })
			case typ == typeUnsub:
				_ = parseNames(p, func(ch string) { delete(want, ch) })
			case typ == typeAck && err == nil && binary.BigEndian.Uint32(p) == 7:
				acks++
			}
			return err
		}
		if err := readLoop(nopConn{}, bufio.NewReader(bytes.NewReader(data)), fuzzLimit, l.q, time.Hour, handle); err == nil {
			t.Fatal("readLoop returned no error at the end of the stream")
		}
		inStreamOrder(t, data, delivered)
		if !maps.Equal(l.interest, want) {
			t.Fatalf("the peer's interest is %v, want %v", l.interest, want)
		}
		if left := 2 - min(acks, 1); w.left != left {
			t.Fatalf("the sub waits for %d acks after %d from the peer, want %d", w.left, acks, left)
		}
	})
}

// inStreamOrder fails unless each of delivered is in data, in this order.
func inStreamOrder(t *testing.T, data []byte, delivered [][]byte) {
	t.Helper()
	rest := data
	for _, fr := range delivered {
		i := bytes.Index(rest, fr)
		if i < 0 {
			t.Fatalf("delivered %q, not in the stream in this order", fr)
		}
		rest = rest[i+len(fr):]
	}
}
