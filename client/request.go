package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// request is the data of a request frame of the protocol extension,
// {"#":["s",name,{"id":N,"channel":C,"data":D,"since":{"offset":O,"epoch":"E"}}]}.
type request struct {
	id      uint64
	channel string
	data    []byte        // one JSON value; nil for none
	since   *hub.Position // a subscribe's recovery point (see wireSince); nil for none
}

func (r request) appendJSON(dst []byte) []byte {
	dst = strconv.AppendUint(append(dst, `{"id":`...), r.id, 10)
	dst = append(dst, `,"channel":`...)
	dst, _ = protocol.AppendValue(dst, r.channel) // a string always encodes
	if r.data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, r.data...)
	}
	if r.since != nil {
		// wireSince lets only epochs of letters and digits through.
		dst = strconv.AppendUint(append(dst, `,"since":{"offset":`...), r.since.Offset, 10)
		dst = append(dst, `,"epoch":"`...)
		dst = append(dst, r.since.Epoch...)
		dst = append(dst, `"}`...)
	}
	return append(dst, '}')
}

// answerData is the data of an answer frame: {"id":N} or
// {"id":N,"error":{"code":C,"reason":R}}; the answer to a subscribe of a
// channel with history adds "position" and, when it asked to recover,
// "recovered". Unknown fields are ignored.
type answerData struct {
	ID    uint64 `json:"id"`
	Error *struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	} `json:"error"`
	Position  *hub.Position `json:"position"`
	Recovered *bool         `json:"recovered"`
}

// answered is what a request's done function gets: the answer (nil when
// none came) and the request's outcome: nil, the *hub.ReplyError, or the
// error the connection ended with.
type answered func(a *answerData, err error)

// request writes a request and arranges for done to run once with its
// answer and outcome. done runs on the goroutine that reads the answer or ends the
// connection, and must not block. When the connection has ended already
// or the write fails, request returns the error and done does not run.
func (s *session) request(ctx context.Context, name string, r request, done answered) (id uint64, err error) {
	s.reqMu.Lock()
	if s.ended != nil {
		err := s.ended
		s.reqMu.Unlock()
		return 0, err
	}
	s.lastID++
	r.id = s.lastID
	s.pending[r.id] = done
	s.reqMu.Unlock()
	frame := s.enc.AppendFrame(nil, protocol.KindSystem, name, r.appendJSON(nil))
	if err := s.write(ctx, frame); err != nil && s.forget(r.id) {
		return 0, err
	}
	// Written, or the connection ended meanwhile and done has its error.
	return r.id, nil
}

// ask writes a request and returns a function that waits for the answer:
// nil, the *hub.ReplyError, the error the connection ended with, or ctx's
// error when ctx ends first.
func (s *session) ask(ctx context.Context, name string, r request) (wait func(context.Context) error, err error) {
	got := make(chan error, 1)
	id, err := s.request(ctx, name, r, func(_ *answerData, err error) { got <- err })
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		select {
		case err := <-got:
			return err
		case <-ctx.Done():
			if !s.forget(id) {
				return <-got // it came meanwhile
			}
			return noAnswer(r.channel, ctx)
		}
	}, nil
}

// noAnswer is the error of a request on channel that ctx ended before its
// answer.
func noAnswer(channel string, ctx context.Context) error {
	return fmt.Errorf("client: channel %q: no answer from the server: %w", channel, ctx.Err())
}

// forget drops the request id; it reports whether it was still waiting.
func (s *session) forget(id uint64) bool {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	_, ok := s.pending[id]
	delete(s.pending, id)
	return ok
}

// answer handles an answer frame from the server. Answers to requests
// nobody waits for (given up, or never made) are ignored.
func (s *session) answer(data []byte) error {
	var a answerData
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	s.reqMu.Lock()
	done := s.pending[a.ID]
	delete(s.pending, a.ID)
	s.reqMu.Unlock()
	if done == nil {
		return errUnknownAnswer
	}
	if a.Error != nil {
		done(&a, &hub.ReplyError{Code: a.Error.Code, Reason: a.Error.Reason})
	} else {
		done(&a, nil)
	}
	return nil
}

var errUnknownAnswer = errors.New("answer to no waiting request")

// end fails every waiting request with err, and every later one.
func (s *session) end(err error) {
	s.reqMu.Lock()
	s.ended = err
	pending := s.pending
	s.pending = nil
	s.reqMu.Unlock()
	for _, done := range pending {
		done(nil, err)
	}
}
