package hub

import (
	"context"
	"errors"
	"sync"
)

// ErrPresenceDisabled is returned for presence asked of a channel that
// Options.Presence does not enable.
var ErrPresenceDisabled = errors.New("hub: presence is not enabled for this channel")

// PresenceSuffix names a presence channel's companion: joins and leaves
// of "room:lobby" are published on "room:lobby/presence", where any client,
// the unmodified 3.x one included, can subscribe to them, and server code
// can Watch them. Subscribing to the companion is asked of OnSubscribe
// like any channel.
const PresenceSuffix = "/presence"

// PresenceEvent is the data of a publish on a companion channel.
type PresenceEvent struct {
	Event    string `json:"event"` // "join" or "leave"
	Channel  string `json:"channel"`
	SocketID string `json:"socket"`
	User     string `json:"user,omitempty"`
}

// presence tracks the members of presence channels among this process's
// sockets and sends their joins and leaves to the PresenceBroker in
// batches: while one batch is on its way, the next one gathers, so 10,000
// sockets joining at once cost a few broker calls, not 10,000.
type presence struct {
	h       *Hub
	enabled func(channel string) bool // nil: presence is off
	broker  PresenceBroker            // nil: this process is the whole picture

	mu      sync.Mutex // protects the fields below
	local   map[string]map[string]Member
	pending []PresenceChange
	batch   chan struct{} // closed once the pending changes are sent
	flight  chan struct{} // the batch being sent, nil when none is
	kick    chan struct{} // wakes the sender
	stopped bool
	done    chan struct{} // closed when the sender has returned
}

func (p *presence) init(h *Hub) {
	p.h, p.enabled = h, h.opts.Presence
	p.local = make(map[string]map[string]Member)
	p.batch = make(chan struct{})
	p.kick = make(chan struct{}, 1)
	p.done = make(chan struct{})
	if pb, ok := h.opts.Broker.(PresenceBroker); ok && p.enabled != nil {
		p.broker = pb
		go p.run()
	} else {
		close(p.done)
	}
}

func (p *presence) on(channel string) bool {
	return p.enabled != nil && !isInternal(channel) && p.enabled(channel)
}

// join records that s joined channel and announces it.
func (p *presence) join(s *Socket, channel string) {
	if !p.on(channel) {
		return
	}
	p.change(PresenceChange{Channel: channel, Member: Member{SocketID: s.id, User: s.User()}})
}

// leave records that s left channel and announces it.
func (p *presence) leave(s *Socket, channel string, user string) {
	if !p.on(channel) {
		return
	}
	p.change(PresenceChange{Channel: channel, Member: Member{SocketID: s.id, User: user}, Leave: true})
}

// userChanged re-announces s in its presence channels under its new user.
func (p *presence) userChanged(s *Socket, old, user string) {
	if p.enabled == nil {
		return
	}
	for _, ch := range s.Channels() {
		if p.on(ch) {
			p.change(PresenceChange{Channel: ch, Member: Member{SocketID: s.id, User: old}, Leave: true})
			p.change(PresenceChange{Channel: ch, Member: Member{SocketID: s.id, User: user}})
		}
	}
}

func (p *presence) change(c PresenceChange) {
	p.mu.Lock()
	members := p.local[c.Channel]
	if c.Leave {
		delete(members, c.Member.SocketID)
		if len(members) == 0 {
			delete(p.local, c.Channel)
		}
	} else {
		if members == nil {
			members = make(map[string]Member)
			p.local[c.Channel] = members
		}
		members[c.Member.SocketID] = c.Member
	}
	if p.broker != nil && !p.stopped {
		p.pending = append(p.pending, c)
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	p.mu.Unlock()

	ev := PresenceEvent{Event: "join", Channel: c.Channel, SocketID: c.Member.SocketID, User: c.Member.User}
	if c.Leave {
		ev.Event = "leave"
	}
	// Sent while the hub shuts down too: the leaves of its last sockets.
	frame, data, err := p.h.encode('p', c.Channel+PresenceSuffix, ev)
	if err == nil {
		err = p.h.send(context.Background(), c.Channel+PresenceSuffix, frame, data)
	}
	if err != nil {
		p.h.log.Debug("presence event not published to other processes", "channel", c.Channel, "err", err)
	}
}

// run sends the pending changes, a batch at a time, until stop.
func (p *presence) run() {
	defer close(p.done)
	for {
		<-p.kick
		p.mu.Lock()
		batch, sent, stopped := p.pending, p.batch, p.stopped
		p.pending, p.batch, p.flight = nil, make(chan struct{}), sent
		p.mu.Unlock()
		if len(batch) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), p.h.opts.BrokerTimeout)
			if err := p.broker.UpdatePresence(ctx, batch); err != nil {
				// The broker keeps the changes and records them on reconnect.
				p.h.counters.brokerErrors.Add(1)
				p.h.log.Warn("presence update failed; it is retried on reconnect", "changes", len(batch), "err", err)
			}
			cancel()
		}
		p.mu.Lock()
		p.flight = nil
		p.mu.Unlock()
		close(sent)
		if stopped {
			return
		}
	}
}

// flush waits until the changes made before the call are sent.
func (p *presence) flush(ctx context.Context) error {
	p.mu.Lock()
	sent := p.flight
	if len(p.pending) > 0 && !p.stopped {
		sent = p.batch // sent after the one in flight
	}
	p.mu.Unlock()
	if sent == nil {
		return nil
	}
	select {
	case <-sent:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop sends what is pending and stops the sender.
func (p *presence) stop() {
	p.mu.Lock()
	if p.broker == nil || p.stopped {
		p.mu.Unlock()
		<-p.done
		return
	}
	p.stopped = true
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
	<-p.done
}

// Presence returns the members of channel in every process, in no
// particular order. It returns ErrPresenceDisabled unless Options.Presence
// enables the channel. It reads the PresenceBroker's view after sending
// this process's pending changes, so a socket that joined here is in it.
func (h *Hub) Presence(ctx context.Context, channel string) ([]Member, error) {
	p := &h.presence
	if !p.on(channel) {
		return nil, ErrPresenceDisabled
	}
	if p.broker == nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		members := make([]Member, 0, len(p.local[channel]))
		for _, m := range p.local[channel] {
			members = append(members, m)
		}
		return members, nil
	}
	if err := p.flush(ctx); err != nil {
		return nil, err
	}
	return p.broker.Presence(ctx, channel)
}

// PresenceStats counts the sockets and distinct users in channel, in
// every process; see Presence.
func (h *Hub) PresenceStats(ctx context.Context, channel string) (PresenceStats, error) {
	members, err := h.Presence(ctx, channel)
	if err != nil {
		return PresenceStats{}, err
	}
	users := make(map[string]struct{}, len(members))
	for _, m := range members {
		if m.User != "" {
			users[m.User] = struct{}{}
		}
	}
	return PresenceStats{Sockets: len(members), Users: len(users)}, nil
}
