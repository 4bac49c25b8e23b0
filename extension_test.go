package clusterws_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/testutil"
)

type answer struct {
	ID    uint64
	Error *struct {
		Code   int
		Reason string
	}
}

// request sends a request of the protocol extension and returns its
// answer, skipping publishes and heartbeats.
func request(t *testing.T, c *testutil.RawClient, name string, body string) answer {
	t.Helper()
	c.Send(`{"#":["s","` + name + `",` + body + `]}`)
	for {
		kind, n, data := c.ReadJSON(timeout)
		if kind == "s" && n == "a" {
			var a answer
			if err := json.Unmarshal(data, &a); err != nil {
				t.Fatalf("answer %s: %v", data, err)
			}
			return a
		}
	}
}

func TestExtensionAnswers(t *testing.T) {
	s := testutil.StartServer(t, nil,
		clusterws.WithMaxChannelLength(16),
		clusterws.WithMaxSubscriptions(3),
		clusterws.WithOnSubscribe(func(_ *hub.Socket, ch string) error {
			if strings.HasPrefix(ch, "private-") {
				return errors.New("members only")
			}
			return nil
		}),
		clusterws.WithOnPublish(func(_ *hub.Socket, _ string, data json.RawMessage) error {
			if string(data) == `"spam"` {
				return errors.New("no spam")
			}
			return nil
		}),
	)
	c := testutil.DialRawExt(t, s.URL)
	handshake(t, c)
	// The refusal reasons: the hook's text, the limit's name.
	for _, tc := range []struct{ body, reason string }{
		{`{"id":1,"channel":"private-y"}`, "members only"},
		{`{"id":1,"channel":"` + strings.Repeat("x", 17) + `"}`, "channel name too long"},
	} {
		if a := request(t, c, "s", tc.body); a.Error == nil || a.Error.Reason != tc.reason {
			t.Fatalf("%s: answer %+v, want reason %q", tc.body, a, tc.reason)
		}
	}
	for i, tc := range []struct {
		name, body string
		code       int
	}{
		{"s", `{"id":1,"channel":"news"}`, 0},
		{"s", `{"id":2,"channel":"news"}`, 0}, // already subscribed
		{"s", `{"id":3,"channel":"private-x"}`, hub.ReplyRefused},
		{"s", `{"id":4,"channel":"` + strings.Repeat("x", 17) + `"}`, hub.ReplyChannelTooLong},
		{"p", `{"id":5,"channel":"news","data":{"n":1}}`, 0},
		{"p", `{"id":6,"channel":"news","data":"spam"}`, hub.ReplyRefused},
		{"p", `{"id":7,"channel":"elsewhere","data":1}`, hub.ReplyNotSubscribed},
		{"s", `{"id":8,"channel":"b"}`, 0},
		{"s", `{"id":9,"channel":"c"}`, 0},
		{"s", `{"id":10,"channel":"d"}`, hub.ReplyTooManyChannels},
		{"u", `{"id":11,"channel":"c"}`, 0},
		{"s", `{"id":12,"channel":"d"}`, 0},
		{"s", `{"id":13,"channel":5}`, hub.ReplyBadRequest}, // malformed: answered, not applied
	} {
		if tc.code < 0 {
			c.Send(`{"#":["s","` + tc.name + `",` + tc.body + `]}`)
			continue
		}
		a := request(t, c, tc.name, tc.body)
		got := 0
		if a.Error != nil {
			got = a.Error.Code
		}
		if a.ID != uint64(i+1) || got != tc.code {
			t.Fatalf("request %d (%s %s): answer %+v, want id %d code %d", i+1, tc.name, tc.body, a, i+1, tc.code)
		}
	}
	// The 3.x forms still work on the same socket, without answers.
	c.Send(`{"#":["p","news","plain"]}`)
	if kind, name, data := c.ReadJSON(timeout); kind != "p" || name != "news" || string(data) != `"plain"` {
		t.Fatalf("3.x publish came back as %s %s %s", kind, name, data)
	}
	st := s.Stats()
	if st.Refused != 6 || st.Ignored != 2 {
		t.Fatalf("Refused %d, Ignored %d; want 6 and 2", st.Refused, st.Ignored)
	}
}

// A client that does not offer the extension never gets an answer, even
// for a request object, which it cannot send under the 3.x protocol.
func TestExtensionNotNegotiated(t *testing.T) {
	s := testutil.StartServer(t, nil)
	s.OnConnection(withPingPong)
	c := dial(t, s)
	if p := c.Conn.Subprotocol(); p != "" {
		t.Fatalf("subprotocol %q chosen for a client that offered none", p)
	}
	c.Send(`{"#":["s","s",{"id":1,"channel":"news"}]}`)
	barrier(t, c)
	if st := s.Stats(); st.Ignored != 1 || st.Channels != 0 {
		t.Fatalf("a request object from a 3.x client: Ignored %d, Channels %d; want 1 and 0", st.Ignored, st.Channels)
	}
}
