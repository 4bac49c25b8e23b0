package clusterws_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

type subAnswer struct {
	ID        uint64
	Position  hub.Position
	Recovered *bool
	Error     *struct{ Code int }
}

func historyServer(t *testing.T) *testutil.Server {
	return testutil.StartServer(t, nil, clusterws.WithHistory(func(ch string) (int, time.Duration) {
		if strings.HasPrefix(ch, "room:") {
			return 100, time.Minute
		}
		return 0, 0
	}))
}

// readPubs reads publishes of channel until the answer to id, and returns
// their data and offsets and the answer.
func readUntilAnswer(t *testing.T, c *testutil.RawClient, id uint64) (data []string, offsets []uint64, a subAnswer) {
	t.Helper()
	for {
		f := c.Read(timeout)
		if len(f.Data) == 1 {
			continue
		}
		var env struct {
			Hash []json.RawMessage `json:"#"`
		}
		if err := json.Unmarshal(f.Data, &env); err != nil {
			t.Fatalf("%s: %v", f.Data, err)
		}
		var kind, name string
		_ = json.Unmarshal(env.Hash[0], &kind)
		_ = json.Unmarshal(env.Hash[1], &name)
		switch {
		case kind == "s" && name == "a":
			if err := json.Unmarshal(env.Hash[2], &a); err != nil || a.ID != id {
				t.Fatalf("answer %s, want id %d", env.Hash[2], id)
			}
			return data, offsets, a
		case kind == "p":
			var pos hub.Position
			if len(env.Hash) != 4 || json.Unmarshal(env.Hash[3], &pos) != nil {
				t.Fatalf("publish without a position: %s", f.Data)
			}
			data = append(data, string(env.Hash[2]))
			offsets = append(offsets, pos.Offset)
		}
	}
}

func TestHistoryRecovery(t *testing.T) {
	s := historyServer(t)
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		if err := s.Publish(ctx, "room:a", i); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh subscriber learns the position and gets only what follows.
	c := testutil.DialRawExt(t, s.URL)
	handshake(t, c)
	c.Send(`{"#":["s","s",{"id":1,"channel":"room:a"}]}`)
	data, _, a := readUntilAnswer(t, c, 1)
	var offsets []uint64
	if len(data) != 0 || a.Position.Offset != 5 || a.Position.Epoch == "" || a.Recovered != nil {
		t.Fatalf("fresh subscribe: %v, answer %+v", data, a)
	}
	epoch := a.Position.Epoch
	_ = s.Publish(ctx, "room:a", 6)
	if kind, _, d := c.ReadJSON(timeout); kind != "p" || string(d) != "6" {
		t.Fatalf("live: %s %s", kind, d)
	}

	// A returning client gets what it missed, in order, then live ones.
	r := testutil.DialRawExt(t, s.URL)
	handshake(t, r)
	r.Send(fmt.Sprintf(`{"#":["s","s",{"id":2,"channel":"room:a","since":{"offset":3,"epoch":%q}}]}`, epoch))
	data, offsets, a = readUntilAnswer(t, r, 2)
	if fmt.Sprint(data) != "[4 5 6]" || fmt.Sprint(offsets) != "[4 5 6]" || a.Recovered == nil || !*a.Recovered || a.Position.Offset != 6 {
		t.Fatalf("recovery: %v %v, answer %+v", data, offsets, a)
	}
	_ = s.Publish(ctx, "room:a", 7)
	if kind, _, d := r.ReadJSON(timeout); kind != "p" || string(d) != "7" {
		t.Fatalf("live after recovery: %s %s", kind, d)
	}

	// Another epoch: told, no replay, live ones only.
	l := testutil.DialRawExt(t, s.URL)
	handshake(t, l)
	l.Send(`{"#":["s","s",{"id":3,"channel":"room:a","since":{"offset":3,"epoch":"gone"}}]}`)
	data, _, a = readUntilAnswer(t, l, 3)
	if len(data) != 0 || a.Recovered == nil || *a.Recovered || a.Position.Offset != 7 {
		t.Fatalf("lost epoch: %v, answer %+v", data, a)
	}

	// History reads.
	pubs, top, err := s.History(ctx, "room:a", hub.Position{}, 2)
	if err != nil || len(pubs) != 2 || pubs[0].Offset != 6 || string(pubs[1].Data) != "7" || top.Offset != 7 {
		t.Fatalf("History(newest 2) = %v, %v, %v", pubs, top, err)
	}
	if _, _, err := s.History(ctx, "room:a", hub.Position{Offset: 1, Epoch: "x"}, 0); !errors.Is(err, hub.ErrPositionLost) {
		t.Fatalf("History from another epoch: %v", err)
	}
	if _, _, err := s.History(ctx, "news", hub.Position{}, 0); !errors.Is(err, hub.ErrHistoryDisabled) {
		t.Fatalf("History of a channel without history: %v", err)
	}
}

// A recovery racing live publications gets every one once, in order.
func TestHistoryRecoveryUnderLoad(t *testing.T) {
	s := historyServer(t)
	ctx := context.Background()
	_ = s.Publish(ctx, "room:b", 0)
	_, top, _ := s.History(ctx, "room:b", hub.Position{}, 1)
	const n = 90
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if err := s.Publish(ctx, "room:b", i); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	c := testutil.DialRawExt(t, s.URL)
	handshake(t, c)
	c.Send(fmt.Sprintf(`{"#":["s","s",{"id":1,"channel":"room:b","since":{"offset":%d,"epoch":%q}}]}`, top.Offset, top.Epoch))
	_, offsets, a := readUntilAnswer(t, c, 1)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	next := top.Offset + 1
	for _, o := range offsets {
		if o != next {
			t.Fatalf("offsets %v: want %d next", offsets, next)
		}
		next++
	}
	if a.Position.Offset != next-1 {
		t.Fatalf("answer at %d after %d replayed", a.Position.Offset, next-1)
	}
	for next <= top.Offset+n {
		f := c.Read(timeout)
		if len(f.Data) == 1 {
			continue
		}
		var env struct {
			Hash []json.RawMessage `json:"#"`
		}
		_ = json.Unmarshal(f.Data, &env)
		var pos hub.Position
		_ = json.Unmarshal(env.Hash[3], &pos)
		if pos.Offset != next {
			t.Fatalf("live offset %d, want %d", pos.Offset, next)
		}
		next++
	}
}
