package protocol_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/clusterws/clusterws-go/internal/protocol"
)

var benchSizes = []struct {
	name string
	size int
}{
	{"100B", 100},
	{"1KiB", 1024},
}

// benchData returns a JSON object of exactly size bytes: chat-like text,
// mostly ASCII with one two-byte character every 32 bytes, so the ASCII
// encoder has escaping to do.
func benchData(size int) []byte {
	const head, tail = `{"text":"`, `"}`
	var sb strings.Builder
	sb.WriteString(head)
	for sb.Len() < size-len(tail) {
		if sb.Len()%32 == 0 && sb.Len()+2 <= size-len(tail) {
			sb.WriteString("é")
			continue
		}
		sb.WriteByte('a' + byte(sb.Len()%26))
	}
	sb.WriteString(tail)
	b := []byte(sb.String())
	if len(b) != size || !json.Valid(b) {
		panic("benchData: bad payload")
	}
	return b
}

func BenchmarkDecode(b *testing.B) {
	for _, sz := range benchSizes {
		frame := protocol.Encoder{}.AppendFrame(nil, protocol.KindPublish, "bench", benchData(sz.size))
		b.Run("size="+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if _, err := protocol.Decode(frame, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	for _, mode := range []struct {
		name string
		enc  protocol.Encoder
	}{
		{"text", protocol.Encoder{}},
		{"ascii", protocol.Encoder{ASCII: true}},
	} {
		for _, sz := range benchSizes {
			data := benchData(sz.size)
			b.Run("mode="+mode.name+"/size="+sz.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				var buf []byte
				for b.Loop() {
					buf = mode.enc.AppendFrame(buf[:0], protocol.KindPublish, "bench", data)
				}
			})
		}
	}
}

// BenchmarkAppendValue is the other half of a publish's encoding cost: the
// value before it is framed. A json.RawMessage is validated and copied; a
// map goes through encoding/json.
func BenchmarkAppendValue(b *testing.B) {
	for _, sz := range benchSizes {
		data := benchData(sz.size)
		var obj map[string]any
		if err := json.Unmarshal(data, &obj); err != nil {
			b.Fatal(err)
		}
		for _, v := range []struct {
			name string
			v    any
		}{
			{"raw", json.RawMessage(data)},
			{"map", obj},
		} {
			b.Run("type="+v.name+"/size="+sz.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				var buf []byte
				for b.Loop() {
					var err error
					if buf, err = protocol.AppendValue(buf[:0], v.v); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
