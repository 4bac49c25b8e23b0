package client_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/internal/protocol"
)

// pubAt is the frame of publication n of channel room at offset o of
// epoch e; an empty e leaves the position out.
func pubAt(n int, o uint64, e string) string {
	if e == "" {
		return fmt.Sprintf(`{"#":["p","room",%d]}`, n)
	}
	return fmt.Sprintf(`{"#":["p","room",%d,{"offset":%d,"epoch":%q}]}`, n, o, e)
}

// answerAt is the members of a subscribe answer at offset o of epoch e,
// with "recovered" unless it is "".
func answerAt(o uint64, e, recovered string) string {
	s := fmt.Sprintf(`,"position":{"offset":%d,"epoch":%q}`, o, e)
	if recovered != "" {
		s += `,"recovered":` + recovered
	}
	return s
}

// pubsFrom returns the frames of publications from..to at the same
// offsets in epoch e.
func pubsFrom(from, to int, e string) []string {
	var out []string
	for n := from; n <= to; n++ {
		out = append(out, pubAt(n, uint64(n), e))
	}
	return out
}

type scripted struct {
	before []string // frames before the answer
	extra  string   // the answer's members
}

// TestRecoverScripted drives the client's side of recovery with a server
// that writes exactly the frames of each case: duplicates, gaps, epochs,
// offset 0, and answers without positions. The first connection's
// subscribe answers first; live frames follow; then the connection drops,
// the client resubscribes with since (want since) and gets second and
// live2. want lists the publications the watcher gets, in order, with
// -1 where OnError gets a RecoveryError (wantErr).
func TestRecoverScripted(t *testing.T) {
	t.Parallel()
	lost := func(o uint64, e string) *client.RecoveryError {
		return &client.RecoveryError{Channel: "room", Since: hub.Position{Offset: 5, Epoch: "E"},
			Position: hub.Position{Offset: o, Epoch: e}, Err: hub.ErrPositionLost}
	}
	for _, tc := range []struct {
		name         string
		first        scripted
		live         []string
		since        *protocol.Position
		second       scripted
		live2        []string
		want         []int
		wantErr      *client.RecoveryError
		wantPosition hub.Position
		unordered    bool // the report may come after publications (too many held)
	}{{
		name:         "recovered, duplicates dropped",
		first:        scripted{extra: answerAt(5, "E", "")},
		live:         []string{pubAt(6, 6, "E"), pubAt(6, 6, "E"), pubAt(4, 4, "E"), pubAt(7, 7, "E")},
		since:        &protocol.Position{Offset: 7, Epoch: "E"},
		second:       scripted{before: []string{pubAt(7, 7, "E"), pubAt(8, 8, "E"), pubAt(9, 9, "E")}, extra: answerAt(9, "E", "true")},
		live2:        []string{pubAt(9, 9, "E"), pubAt(10, 10, "E")},
		want:         []int{6, 7, 8, 9, 10},
		wantPosition: hub.Position{Offset: 10, Epoch: "E"},
	}, {
		name:         "gap: reported before the publications after it",
		first:        scripted{extra: answerAt(5, "E", "")},
		since:        &protocol.Position{Offset: 5, Epoch: "E"},
		second:       scripted{before: []string{pubAt(9, 9, "E"), pubAt(10, 10, "E")}, extra: answerAt(10, "E", "false")},
		live2:        []string{pubAt(11, 11, "E")},
		want:         []int{-1, 9, 10, 11},
		wantErr:      lost(8, "E"),
		wantPosition: hub.Position{Offset: 11, Epoch: "E"},
	}, {
		name:         "another epoch",
		first:        scripted{extra: answerAt(5, "E", "")},
		since:        &protocol.Position{Offset: 5, Epoch: "E"},
		second:       scripted{before: []string{pubAt(3, 3, "F")}, extra: answerAt(3, "F", "false")},
		live2:        []string{pubAt(4, 4, "F")},
		want:         []int{-1, 3, 4},
		wantErr:      lost(2, "F"),
		wantPosition: hub.Position{Offset: 4, Epoch: "F"},
	}, {
		name:         "window exceeded, nothing before the answer",
		first:        scripted{extra: answerAt(5, "E", "")},
		since:        &protocol.Position{Offset: 5, Epoch: "E"},
		second:       scripted{extra: answerAt(500, "E", "false")},
		live2:        []string{pubAt(501, 501, "E")},
		want:         []int{-1, 501},
		wantErr:      lost(500, "E"),
		wantPosition: hub.Position{Offset: 501, Epoch: "E"},
	}, {
		name:         "more publications after a gap than are held",
		first:        scripted{extra: answerAt(5, "E", "")},
		since:        &protocol.Position{Offset: 5, Epoch: "E"},
		second:       scripted{before: pubsFrom(10, 400, "E"), extra: answerAt(400, "E", "false")},
		live2:        []string{pubAt(401, 401, "E")},
		want:         append([]int{-1}, seq(10, 401)...),
		wantErr:      lost(9, "E"),
		wantPosition: hub.Position{Offset: 401, Epoch: "E"},
		unordered:    true,
	}, {
		// The protocol takes no since at offset 0; the client subscribes
		// without one and checks the answer.
		name:         "offset 0, nothing missed",
		first:        scripted{extra: answerAt(0, "E", "")},
		second:       scripted{extra: answerAt(0, "E", "")},
		live2:        []string{pubAt(1, 1, "E")},
		want:         []int{1},
		wantPosition: hub.Position{Offset: 1, Epoch: "E"},
	}, {
		name:         "offset 0, the missed ones before the answer",
		first:        scripted{extra: answerAt(0, "E", "")},
		second:       scripted{before: pubsFrom(1, 2, "E"), extra: answerAt(2, "E", "")},
		live2:        []string{pubAt(3, 3, "E")},
		want:         []int{1, 2, 3},
		wantPosition: hub.Position{Offset: 3, Epoch: "E"},
	}, {
		name:   "offset 0, missed",
		first:  scripted{extra: answerAt(0, "E", "")},
		second: scripted{extra: answerAt(3, "E", "")},
		live2:  []string{pubAt(4, 4, "E")},
		want:   []int{-1, 4},
		wantErr: &client.RecoveryError{Channel: "room", Since: hub.Position{Epoch: "E"},
			Position: hub.Position{Offset: 3, Epoch: "E"}, Err: hub.ErrPositionLost},
		wantPosition: hub.Position{Offset: 4, Epoch: "E"},
	}, {
		name:   "history gone: no position in the answer",
		first:  scripted{extra: answerAt(5, "E", "")},
		since:  &protocol.Position{Offset: 5, Epoch: "E"},
		live2:  []string{pubAt(1, 0, "")},
		want:   []int{-1, 1},
		second: scripted{},
		wantErr: &client.RecoveryError{Channel: "room", Since: hub.Position{Offset: 5, Epoch: "E"},
			Err: hub.ErrHistoryDisabled},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ts := newTestServer(t, serverOptions{ext: true, subscribe: func(n int64, _ protocol.Request) ([]string, string) {
				if n == 1 {
					return tc.first.before, tc.first.extra
				}
				return tc.second.before, tc.second.extra
			}})
			c := dial(t, ts, client.Options{Recover: true, AutoReconnect: true, ReconnectMin: time.Millisecond, ReconnectMax: 10 * time.Millisecond})
			var f feed
			c.OnError(f.onError)
			ch, err := c.SubscribeFrom(ctx, "room", hub.Position{}, f.watch)
			if err != nil {
				t.Fatal(err)
			}
			for _, frame := range tc.live {
				ts.sendAll(websocket.MessageText, []byte(frame))
			}
			barrier(t, c)
			ts.dropAll()
			waitFor(t, "the reconnect", func() bool { return ts.connects.Load() == 2 && c.Connected() })
			barrier(t, c) // the answer to the resubscription, and what came before it
			for _, frame := range tc.live2 {
				ts.sendAll(websocket.MessageText, []byte(frame))
			}
			barrier(t, c)

			var got []int
			f.mu.Lock()
			for _, it := range f.items {
				if it.err != nil {
					got = append(got, -1)
				} else {
					got = append(got, it.n)
				}
			}
			f.mu.Unlock()
			if tc.unordered {
				slices.Sort(got)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if tc.wantErr != nil && len(f.errs()) == 1 {
				re := wantRecoveryError(t, f.errs()[0], "room", tc.wantErr.Err)
				if *re != *tc.wantErr {
					t.Errorf("got %+v, want %+v", *re, *tc.wantErr)
				}
			}
			if p := ch.Position(); p != tc.wantPosition {
				t.Errorf("Position() = %+v, want %+v", p, tc.wantPosition)
			}
			var since []*protocol.Position
			for _, r := range ts.seen() {
				if r.name == protocol.SystemSubscribe {
					since = append(since, r.since)
				}
			}
			if len(since) != 2 || since[0] != nil || !equalPos(since[1], tc.since) {
				t.Errorf("subscribes with since %s, want nil then %s", fmtPos(since...), fmtPos(tc.since))
			}
		})
	}
}

func fmtPos(ps ...*protocol.Position) string {
	var out []string
	for _, p := range ps {
		if p == nil {
			out = append(out, "nil")
		} else {
			out = append(out, fmt.Sprintf("%+v", *p))
		}
	}
	return strings.Join(out, ", ")
}

func equalPos(a, b *protocol.Position) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}
