package client

import (
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestOptions(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	httpClient := &http.Client{Timeout: time.Minute}
	defaults := Options{
		ReconnectMin:     DefaultReconnectMin,
		ReconnectMax:     DefaultReconnectMax,
		HandshakeTimeout: DefaultHandshakeTimeout,
		ReadLimit:        DefaultReadLimit,
	}
	for _, tc := range []struct {
		name string
		in   Options
		want func(o *Options) // applied to defaults; nil when invalid
		errs []string         // the fields the error names
	}{
		{name: "zero", want: func(*Options) {}},
		{name: "AutoReconnect", in: Options{AutoReconnect: true}, want: func(o *Options) { o.AutoReconnect = true }},
		{name: "ReconnectMin", in: Options{ReconnectMin: time.Second}, want: func(o *Options) { o.ReconnectMin = time.Second }},
		{name: "ReconnectMin above the default max", in: Options{ReconnectMin: time.Minute},
			want: func(o *Options) { o.ReconnectMin, o.ReconnectMax = time.Minute, time.Minute }},
		{name: "ReconnectMin negative", in: Options{ReconnectMin: -1}, errs: []string{"ReconnectMin"}},
		{name: "ReconnectMax", in: Options{ReconnectMax: time.Minute}, want: func(o *Options) { o.ReconnectMax = time.Minute }},
		{name: "ReconnectMax below the default min", in: Options{ReconnectMax: time.Millisecond},
			want: func(o *Options) { o.ReconnectMin, o.ReconnectMax = time.Millisecond, time.Millisecond }},
		{name: "ReconnectMax negative", in: Options{ReconnectMax: -1}, errs: []string{"ReconnectMax"}},
		{name: "ReconnectMin equals ReconnectMax", in: Options{ReconnectMin: time.Second, ReconnectMax: time.Second},
			want: func(o *Options) { o.ReconnectMin, o.ReconnectMax = time.Second, time.Second }},
		{name: "ReconnectMin above ReconnectMax", in: Options{ReconnectMin: 2 * time.Second, ReconnectMax: time.Second},
			errs: []string{"ReconnectMin must not exceed ReconnectMax 1s (got 2s)"}},
		{name: "ReconnectAttempts", in: Options{ReconnectAttempts: 3}, want: func(o *Options) { o.ReconnectAttempts = 3 }},
		{name: "ReconnectAttempts negative", in: Options{ReconnectAttempts: -1}, errs: []string{"ReconnectAttempts"}},
		{name: "HandshakeTimeout", in: Options{HandshakeTimeout: time.Second}, want: func(o *Options) { o.HandshakeTimeout = time.Second }},
		{name: "HandshakeTimeout negative", in: Options{HandshakeTimeout: -1}, errs: []string{"HandshakeTimeout"}},
		{name: "ReadLimit", in: Options{ReadLimit: 1024}, want: func(o *Options) { o.ReadLimit = 1024 }},
		{name: "ReadLimit negative", in: Options{ReadLimit: -1}, errs: []string{"ReadLimit"}},
		{name: "Legacy", in: Options{Legacy: true}, want: func(o *Options) { o.Legacy = true }},
		{name: "HTTPHeader", in: Options{HTTPHeader: http.Header{"Origin": {"x"}}},
			want: func(o *Options) { o.HTTPHeader = http.Header{"Origin": {"x"}} }},
		{name: "HTTPClient", in: Options{HTTPClient: httpClient}, want: func(o *Options) { o.HTTPClient = httpClient }},
		{name: "Logger", in: Options{Logger: logger}, want: func(o *Options) { o.Logger = logger }},
		{name: "every problem", in: Options{ReconnectMin: -1, ReadLimit: -1, HandshakeTimeout: -1},
			errs: []string{"ReconnectMin", "ReadLimit", "HandshakeTimeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := New("ws://localhost/ws", tc.in)
			if tc.want == nil {
				if !errors.Is(err, ErrInvalidOption) {
					t.Fatalf("New = %v, want ErrInvalidOption", err)
				}
				for _, field := range tc.errs {
					if !strings.Contains(err.Error(), field) {
						t.Errorf("error %q does not name %q", err, field)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer c.Close()
			got, want := c.opts, defaults
			tc.want(&want)
			if got.Logger == nil || (want.Logger != nil && got.Logger != want.Logger) {
				t.Errorf("Logger = %p, want %p (non-nil)", got.Logger, want.Logger)
			}
			got.Logger, want.Logger = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("options = %+v, want %+v", got, want)
			}
		})
	}
}

// TestOptionsHeaderCopied: the client keeps its own copy of HTTPHeader.
func TestOptionsHeaderCopied(t *testing.T) {
	t.Parallel()
	hdr := http.Header{"Origin": {"a"}}
	c, err := New("ws://localhost/ws", Options{HTTPHeader: hdr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr.Set("Origin", "b")
	if got := c.opts.HTTPHeader.Get("Origin"); got != "a" {
		t.Errorf("Origin = %q after the caller changed its map, want %q", got, "a")
	}
}
