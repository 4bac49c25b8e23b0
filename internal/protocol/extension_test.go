package protocol

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeRequest(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ext  bool
		want Request
		err  bool
	}{
		{`"news"`, false, Request{Channel: "news"}, false},
		{`"news"`, true, Request{Channel: "news"}, false},
		{`{"id":7,"channel":"room"}`, true, Request{ID: 7, Channel: "room"}, false},
		{`{"id":9,"channel":"room","data":{"a":[1,"é"]}}`, true, Request{ID: 9, Channel: "room", Data: json.RawMessage(`{"a":[1,"é"]}`)}, false},
		{`{"id":7,"channel":"room"}`, false, Request{}, true},
		{`{"id":-1,"channel":"room"}`, true, Request{}, true},
		{`{"id":1,"channel":5}`, true, Request{}, true},
		{`{"id":1,"chan":"x"}`, true, Request{}, true},
		{`{"id":1,"channel":"x"} {}`, true, Request{}, true},
		{`[1]`, true, Request{}, true},
		{`5`, true, Request{}, true},
	} {
		got, err := DecodeRequest([]byte(tc.in), tc.ext)
		if (err != nil) != tc.err || got.ID != tc.want.ID || got.Channel != tc.want.Channel || string(got.Data) != string(tc.want.Data) {
			t.Errorf("DecodeRequest(%s, %v) = %+v, %v; want %+v, error %v", tc.in, tc.ext, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, ErrShape) {
			t.Errorf("DecodeRequest(%s): %v is not ErrShape", tc.in, err)
		}
	}
}

func TestAnswer(t *testing.T) {
	for _, tc := range []struct {
		enc    Encoder
		id     uint64
		code   int
		reason string
		want   string
	}{
		{Encoder{}, 3, 0, "", `{"#":["s","a",{"id":3}]}`},
		{Encoder{}, 4, 403, `not "you"`, `{"#":["s","a",{"id":4,"error":{"code":403,"reason":"not \"you\""}}]}`},
		{Encoder{ASCII: true}, 5, 414, "é", `{"#":["s","a",{"id":5,"error":{"code":414,"reason":"\u00e9"}}]}`},
	} {
		if got := string(tc.enc.Answer(tc.id, tc.code, tc.reason, nil)); got != tc.want {
			t.Errorf("Answer(%d, %d, %q) = %s, want %s", tc.id, tc.code, tc.reason, got, tc.want)
		}
		if _, err := Decode(tc.enc.Answer(tc.id, tc.code, tc.reason, nil), false); err != nil {
			t.Errorf("answer does not decode: %v", err)
		}
	}
}

// FuzzDecodeRequest: any input is either refused with ErrShape or yields a
// request whose answer and data round-trip.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{`"news"`, `{"id":7,"channel":"room"}`, `{"id":9,"channel":"r","data":{"a":[1,"é"]}}`, `{"id":1}`, `{}`, `"\u00e9"`} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, b []byte, ext bool) {
		r, err := DecodeRequest(b, ext)
		if err != nil {
			if !errors.Is(err, ErrShape) {
				t.Fatalf("DecodeRequest(%q): unclassified error %v", b, err)
			}
			return
		}
		if len(r.Data) > 0 && !json.Valid(r.Data) {
			t.Fatalf("DecodeRequest(%q): data %q is not JSON", b, r.Data)
		}
		for _, enc := range []Encoder{{}, {ASCII: true}} {
			if _, err := Decode(enc.Answer(r.ID, 403, r.Channel, nil), false); err != nil {
				t.Fatalf("answer with reason %q does not decode: %v", r.Channel, err)
			}
		}
	})
}
