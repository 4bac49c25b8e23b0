package protocol

import (
	"testing"
)

func TestPosition(t *testing.T) {
	for _, enc := range []Encoder{{}, {ASCII: true}, {Legacy: true}} {
		frame := enc.AppendFrame(nil, KindPublish, "room", []byte(`{"a":[1,{"offset":2,"epoch":"x"}]}`))
		pos := Position{Offset: 18446744073709551615, Epoch: "a1B2"}
		pf := AppendPosition(frame, pos)
		if got, ok := FramePosition(pf); !ok || got != pos {
			t.Fatalf("FramePosition(%s) = %v, %v", pf, got, ok)
		}
		m, err := Decode(pf, enc.Legacy)
		if err != nil || !m.HasPosition || m.Position != pos || string(m.Data) != `{"a":[1,{"offset":2,"epoch":"x"}]}` {
			t.Fatalf("Decode(%s) = %+v, %v", pf, m, err)
		}
		if m, err := Decode(frame, enc.Legacy); err != nil || m.HasPosition {
			t.Fatalf("a frame without a position: %+v, %v", m, err)
		}
		if _, ok := FramePosition(frame); ok {
			t.Fatalf("FramePosition found one in %s", frame)
		}
	}
	for _, bad := range []string{
		`{"#":["p","r",1,{"offset":-1,"epoch":"e"}]}`,
		`{"#":["p","r",1,{"offset":1,"epoch":"e-"}]}`,
		`{"#":["p","r",1,{"offset":1,"epoch":""}]}`,
		`{"#":["p","r",1,{"offset":1}]}`,
		`{"#":["p","r",{"offset":1,"epoch":"e"}]}`,
	} {
		if m, err := Decode([]byte(bad), false); err == nil && m.HasPosition {
			t.Errorf("Decode(%s) read a position %v", bad, m.Position)
		}
	}
}
