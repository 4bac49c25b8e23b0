package proto

import (
	"testing"

	"github.com/clusterws/clusterws-go/internal/wsc"
)

func TestPayload(t *testing.T) {
	for _, size := range []int{100, 1024} {
		b := AppendPayload(nil, Payload{T: 1712345678901234567, Pub: 42, Seq: 7}, size)
		if len(b) != size {
			t.Fatalf("size %d: got %d bytes", size, len(b))
		}
		p, ok := ParsePayload(b)
		if !ok || p.T != 1712345678901234567 || p.Pub != 42 || p.Seq != 7 {
			t.Fatalf("parse %q: %+v %v", b, p, ok)
		}
	}
}

func TestParse(t *testing.T) {
	data := AppendPayload(nil, Payload{T: 5, Pub: 1, Seq: 2}, 100)
	var got []Msg
	collect := func(m *Msg) {
		c := *m
		c.Channel, c.Data, c.Name = append([]byte(nil), m.Channel...), append([]byte(nil), m.Data...), append([]byte(nil), m.Name...)
		got = append(got, c)
	}
	if _, err := (ClusterWS{}).Parse(wsc.OpText, []byte(`{"#":["p","ch1",`+string(data)+`]}`), collect); err != nil {
		t.Fatal(err)
	}
	if r, _ := (ClusterWS{}).Parse(wsc.OpBinary, []byte("9"), collect); r == nil {
		t.Fatal("no pong for a ClusterWS ping")
	}
	line := `{"push":{"channel":"ch2","pub":{"data":` + string(data) + `}}}`
	r, err := (Centrifuge{}).Parse(wsc.OpText, []byte(line+"\n{}\n"+`{"id":3,"rpc":{"data":123}}`+"\n"+`{"id":4,"error":{"code":103,"message":"x"}}`), collect)
	if err != nil || r == nil {
		t.Fatalf("centrifuge parse: %v, pong %v", err, r != nil)
	}
	if len(got) != 4 {
		t.Fatalf("got %d messages: %+v", len(got), got)
	}
	for i, ch := range []string{"ch1", "ch2"} {
		if got[i].Kind != KindPublish || string(got[i].Channel) != ch {
			t.Fatalf("message %d: %+v", i, got[i])
		}
		if p, ok := ParsePayload(got[i].Data); !ok || p.Seq != 2 {
			t.Fatalf("message %d payload: %+v", i, p)
		}
	}
	if got[2].Kind != KindReply || got[2].ID != 3 || string(got[2].Data[:3]) != "123" || got[2].Err {
		t.Fatalf("rpc reply: %+v", got[2])
	}
	if !got[3].Err || got[3].ID != 4 {
		t.Fatalf("error reply: %+v", got[3])
	}
}

// unframe returns the payload of one masked client text frame.
func unframe(t *testing.T, f []byte) string {
	t.Helper()
	if len(f) < 6 || f[0] != 0x80|wsc.OpText || f[1]&0x7f > 125 {
		t.Fatalf("not one short text frame: %q", f)
	}
	key, p := f[2:6], []byte(string(f[6:]))
	for i := range p {
		p[i] ^= key[i%4]
	}
	return string(p)
}

func TestAppend(t *testing.T) {
	data := []byte(`{"x":1}`)
	for _, tc := range []struct {
		frame []byte
		want  string
	}{
		{ClusterWS{}.AppendSubscribe(nil, "ch1", 5), `{"#":["s","s","ch1"]}`},
		{ClusterWS{}.AppendPublish(nil, "ch1", data, 5), `{"#":["p","ch1",{"x":1}]}`},
		{ClusterWS{}.AppendRelay(nil, "ch1", data, 5), `{"#":["e","pub",{"c":"ch1","d":{"x":1}}]}`},
		{ClusterWS{}.AppendCall(nil, "echo", data, 5), `{"#":["e","echo",{"x":1}]}`},
		{ClusterWS{}.AppendCall(nil, "whoami", nil, 5), `{"#":["e","whoami",null]}`},
		{Centrifuge{}.AppendSubscribe(nil, "ch1", 5), `{"id":5,"subscribe":{"channel":"ch1"}}`},
		{Centrifuge{}.AppendPublish(nil, "ch1", data, 5), `{"id":5,"publish":{"channel":"ch1","data":{"x":1}}}`},
		{Centrifuge{}.AppendRelay(nil, "ch1", data, 5), `{"id":5,"publish":{"channel":"ch1","data":{"x":1}}}`},
		{Centrifuge{}.AppendCall(nil, "echo", data, 5), `{"id":5,"rpc":{"method":"echo","data":{"x":1}}}`},
		{Centrifuge{}.AppendCall(nil, "whoami", nil, 5), `{"id":5,"rpc":{"method":"whoami","data":null}}`},
	} {
		if got := unframe(t, tc.frame); got != tc.want {
			t.Errorf("frame %s, want %s", got, tc.want)
		}
	}
	if f, _ := (Centrifuge{}).Hello(); unframe(t, f) != `{"id":1,"connect":{}}` {
		t.Errorf("hello %s", unframe(t, f))
	}
}
