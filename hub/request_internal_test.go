package hub

import (
	"net/http"
	"net/url"
	"reflect"
	"testing"
)

// TestReparses: the socket drops the URL only when parsing RequestURI
// again gives the same one, which Request then does.
func TestReparses(t *testing.T) {
	cases := []struct {
		uri    string
		change func(*url.URL) // a middleware's change to the parsed URL
		want   bool
	}{
		{uri: "/ws", want: true},
		{uri: "/ws?room=7&name=a+b", want: true},
		{uri: "//ws?x", want: true},
		{uri: "*", want: true},
		{uri: "/ws?", want: false},            // ForceQuery
		{uri: "/ws/a%2Fb", want: false},       // RawPath
		{uri: "/ws/a%20b", want: false},       // Path differs from the raw path
		{uri: "/ws?q=%23", want: true},        // the query stays raw
		{uri: "http://h/ws?x=1", want: false}, // absolute form
		{uri: "/app/ws", change: func(u *url.URL) { u.Path = "/ws" }, want: false},
		{uri: "/ws", change: func(u *url.URL) { u.Path = "/w%73" }, want: false},
		{uri: "/ws?a=1", change: func(u *url.URL) { u.RawQuery = "a=2" }, want: false},
		{uri: "/ws?a=1", change: func(u *url.URL) { u.RawQuery = "" }, want: false},
		{uri: "/ws", change: func(u *url.URL) { u.Host = "example.com" }, want: false},
	}
	for _, tc := range cases {
		u, err := url.ParseRequestURI(tc.uri)
		if err != nil {
			t.Fatalf("%q: %v", tc.uri, err)
		}
		if tc.change != nil {
			tc.change(u)
		}
		got := reparses(u, tc.uri)
		if got != tc.want {
			t.Errorf("reparses(%#v, %q) = %v, want %v", u, tc.uri, got, tc.want)
		}
		if again, _ := url.ParseRequestURI(tc.uri); got && !reflect.DeepEqual(again, u) {
			t.Errorf("%q: reparses, but the parse gives %#v, not %#v", tc.uri, again, u)
		}
	}
}

// TestKeptHeader: packing and unpacking gives the header back without
// the handshake's own fields, multiple values in their order.
func TestKeptHeader(t *testing.T) {
	in := http.Header{
		"Cookie":                {"a=1", "b=2"},
		"X-Colon":               {"x: y: z"},
		"X-Empty":               {""},
		"User-Agent":            {"Mozilla/5.0 (X11; Linux x86_64)"},
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
		"Sec-Websocket-Version": {"13"},
	}
	want := http.Header{
		"Cookie":     {"a=1", "b=2"},
		"X-Colon":    {"x: y: z"},
		"X-Empty":    {""},
		"User-Agent": {"Mozilla/5.0 (X11; Linux x86_64)"},
	}
	if got := unpackHeader(keptHeader(in)); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if p := keptHeader(http.Header{"Upgrade": {"websocket"}}); p != "" {
		t.Errorf("only handshake fields packed to %q", p)
	}
	if got := unpackHeader(""); got == nil || len(got) != 0 {
		t.Errorf("unpackHeader(\"\") = %#v, want an empty header", got)
	}
}
