package hub

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

// Users and addressing travel between processes on internal channels of
// the Broker, so they work with any Broker: a process subscribes to the
// channel of each user it has sockets of, and always to its own node
// channel. Their names start with a NUL byte, which clients may not
// subscribe or publish to.
const internalPrefix = "\x00"

func userChannel(user string) string   { return internalPrefix + "u:" + user }
func nodeChannel(prefix string) string { return internalPrefix + "n:" + prefix }

// Frames on internal channels are client frames (they start with '{'),
// written to the channel's local sockets like any publish, or control
// frames, which start with one of these bytes.
const (
	ctlClose    = 0x01 // user channel: code (2 bytes), reason
	ctlToSocket = 0x02 // node channel: request (8), reply node (1+n), socket ID (1+n), client frame
	ctlReply    = 0x03 // node channel: request (8), result (1)
)

// Results of a ctlToSocket, carried by its ctlReply.
const (
	replySent = iota
	replyNotFound
	replyClosed
)

// More errors of package hub.
var (
	ErrInvalidUser     = errors.New("hub: invalid user: empty")
	ErrUserTooLong     = errors.New("hub: user ID too long")
	ErrInvalidSocketID = errors.New("hub: not a socket ID")
	ErrSocketNotFound  = errors.New("hub: no such socket")
	errReservedChannel = errors.New("reserved channel name")
)

// SetUser sets the socket's user: the identity SendToUser and
// DisconnectUser address and presence reports, e.g. from a token checked
// in the upgrade. "" makes the socket anonymous again. A user ID is the
// application's; it may not be longer than Options.MaxUserLength
// (ErrUserTooLong). Presence entries of the socket follow the change (a
// leave and a join). It returns once other processes route the user's
// sends here, and ErrSocketClosed after the socket closed.
func (s *Socket) SetUser(user string) error {
	h := s.hub
	if len(user) > h.opts.MaxUserLength {
		return ErrUserTooLong
	}
	// userMu keeps the socket's user entry consistent with a concurrent
	// close (see finish).
	s.userMu.Lock()
	defer s.userMu.Unlock()
	s.mu.Lock()
	old, ended := s.user, s.ended
	if !ended {
		s.user = user
	}
	s.mu.Unlock()
	if ended {
		return ErrSocketClosed
	}
	if old == user {
		return nil
	}
	if old != "" {
		h.removeSubscriber(userChannel(old), s)
	}
	if user != "" {
		h.addSubscriber(userChannel(user), s)
	}
	h.presence.userChanged(s, old, user)
	return nil
}

// User returns the socket's user, "" when never set.
func (s *Socket) User() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user
}

// leaveUser removes a closed socket from its user's channel.
func (s *Socket) leaveUser() {
	s.userMu.Lock()
	defer s.userMu.Unlock()
	s.mu.Lock()
	user := s.user
	s.ended = true
	s.mu.Unlock()
	if user != "" {
		s.hub.removeSubscriber(userChannel(user), s)
	}
}

func (h *Hub) checkUser(user string) error {
	switch {
	case user == "":
		return ErrInvalidUser
	case len(user) > h.opts.MaxUserLength:
		return ErrUserTooLong
	}
	return nil
}

// SendToUser sends the event to every socket of user, in every process. A
// user with no socket anywhere is not an error: the event reaches the
// sockets connected at that moment, and nil means the local ones got it and
// the Broker took it. It is encoded once.
func (h *Hub) SendToUser(ctx context.Context, user, event string, data any) error {
	if err := h.checkUser(user); err != nil {
		return err
	}
	frame, _, err := h.encode(protocol.KindEvent, event, data)
	if err != nil {
		return err
	}
	return h.publish(ctx, userChannel(user), frame, nil)
}

// DisconnectUser closes every socket of user, in every process, with code
// and reason, after the frames already queued for them. A user with no
// socket is not an error. The code must be 1000 or 3000–4999 and the
// reason at most 123 bytes, or it returns ErrInvalidClose.
func (h *Hub) DisconnectUser(ctx context.Context, user string, code CloseCode, reason string) error {
	if err := h.checkUser(user); err != nil {
		return err
	}
	if err := checkClose(code, reason); err != nil {
		return err
	}
	frame := binary.BigEndian.AppendUint16([]byte{ctlClose}, uint16(code))
	frame = append(frame, reason...)
	return h.publish(ctx, userChannel(user), frame, nil)
}

// SendToSocket sends the event to the socket with that ID, whichever
// process holds it. It returns ErrInvalidSocketID for an ID that no hub
// makes, ErrSocketNotFound when the socket is not connected (for another
// process's socket: when that process says so, or does not answer within
// Options.BrokerTimeout), and ErrSocketClosed when it is closing.
func (h *Hub) SendToSocket(ctx context.Context, socketID, event string, data any) error {
	prefix, ok := socketPrefix(socketID)
	if !ok {
		return ErrInvalidSocketID
	}
	frame, _, err := h.encode(protocol.KindEvent, event, data)
	if err != nil {
		return err
	}
	if prefix == h.idPrefix || h.opts.Broker == nil {
		return resultErr(h.sendLocal(socketID, frame))
	}
	return h.sendRemote(ctx, prefix, socketID, frame)
}

// socketPrefix returns the process part of a socket ID: 16 hex digits and
// a dash, then the socket's number in base 36.
func socketPrefix(id string) (string, bool) {
	const n = 17
	if len(id) <= n || len(id) > n+13 || id[n-1] != '-' {
		return "", false
	}
	for _, c := range id[:n-1] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", false
		}
	}
	for _, c := range id[n:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
			return "", false
		}
	}
	return id[:n], true
}

func (h *Hub) sendLocal(socketID string, frame []byte) byte {
	h.mu.RLock()
	s := h.sockets[socketID]
	h.mu.RUnlock()
	switch {
	case s == nil:
		return replyNotFound
	case !s.send(frame, true):
		return replyClosed
	}
	return replySent
}

func resultErr(r byte) error {
	switch r {
	case replySent:
		return nil
	case replyClosed:
		return ErrSocketClosed
	}
	return ErrSocketNotFound
}

// requests are SendToSocket calls waiting for the socket's process.
type requests struct {
	mu      sync.Mutex // protects the fields below
	next    uint64
	waiting map[uint64]chan byte
}

func (h *Hub) sendRemote(ctx context.Context, prefix, socketID string, frame []byte) error {
	r := &h.requests
	done := make(chan byte, 1)
	r.mu.Lock()
	r.next++
	id := r.next
	if r.waiting == nil {
		r.waiting = make(map[uint64]chan byte)
	}
	r.waiting[id] = done
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, id)
		r.mu.Unlock()
	}()

	msg := binary.BigEndian.AppendUint64([]byte{ctlToSocket}, id)
	msg = append(append(msg, byte(len(h.idPrefix))), h.idPrefix...)
	msg = append(append(msg, byte(len(socketID))), socketID...)
	msg = append(msg, frame...)
	if err := h.opts.Broker.Publish(ctx, nodeChannel(prefix), msg); err != nil {
		h.counters.brokerErrors.Add(1)
		return err
	}
	t := time.NewTimer(h.opts.BrokerTimeout)
	defer t.Stop()
	select {
	case res := <-done:
		return resultErr(res)
	case <-t.C:
		return fmt.Errorf("%w: its process did not answer within %v", ErrSocketNotFound, h.opts.BrokerTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// control carries out a control frame published on an internal channel,
// here or by another process.
func (h *Hub) control(channel string, frame []byte) {
	switch frame[0] {
	case ctlClose:
		if len(frame) < 3 {
			return
		}
		e := CloseError{Code: CloseCode(binary.BigEndian.Uint16(frame[1:])), Reason: string(frame[3:])}
		for _, s := range h.snapshot(channel) {
			s.close(e)
		}
	case ctlToSocket:
		id, replyTo, socketID, client, ok := parseToSocket(frame)
		if !ok {
			return
		}
		reply := binary.BigEndian.AppendUint64([]byte{ctlReply}, id)
		reply = append(reply, h.sendLocal(socketID, client))
		if err := h.opts.Broker.Publish(context.Background(), nodeChannel(replyTo), reply); err != nil {
			h.counters.brokerErrors.Add(1)
		}
	case ctlReply:
		if len(frame) != 10 {
			return
		}
		id := binary.BigEndian.Uint64(frame[1:])
		h.requests.mu.Lock()
		done := h.requests.waiting[id]
		h.requests.mu.Unlock()
		if done != nil {
			select {
			case done <- frame[9]:
			default:
			}
		}
	}
}

func parseToSocket(f []byte) (id uint64, replyTo, socketID string, client []byte, ok bool) {
	f = f[1:]
	if len(f) < 9 {
		return 0, "", "", nil, false
	}
	id, f = binary.BigEndian.Uint64(f), f[8:]
	field := func() (string, bool) {
		if len(f) < 1 || len(f) < 1+int(f[0]) {
			return "", false
		}
		v := string(f[1 : 1+f[0]])
		f = f[1+f[0]:]
		return v, true
	}
	replyTo, ok1 := field()
	socketID, ok2 := field()
	return id, replyTo, socketID, f, ok1 && ok2 && len(f) > 0
}

// snapshot returns the local subscribers of channel.
func (h *Hub) snapshot(channel string) []*Socket {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if subs := h.channels[channel]; subs != nil {
		return append([]*Socket(nil), subs.sockets...)
	}
	return nil
}

// isInternal reports whether clients are kept away from channel.
func isInternal(channel string) bool { return strings.HasPrefix(channel, internalPrefix) }
