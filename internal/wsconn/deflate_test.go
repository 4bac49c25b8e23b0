package wsconn

import (
	"bytes"
	"compress/flate"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// inflate decodes a permessage-deflate payload as a receiver does: the
// removed tail added back (RFC 7692, section 7.2.2).
func inflate(t *testing.T, payload []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(payload), strings.NewReader(deflateTail)))
	out, err := io.ReadAll(r)
	if err != nil && err != io.ErrUnexpectedEOF {
		t.Fatalf("inflate: %v", err)
	}
	return out
}

// jsonLike is size bytes of repetitive JSON, as publishes are.
func jsonLike(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"items":[`)
	for i := 0; b.Len() < size; i++ {
		b.WriteString(`{"id":` + strings.Repeat("7", i%5+1) + `,"name":"item","price":12.5,"tags":["a","b"]},`)
	}
	return b.Bytes()[:size]
}

// TestDeflate checks the payload against compress/flate's reader at every
// level, that the flush tail is removed, and that incompressible input is
// refused.
func TestDeflate(t *testing.T) {
	for _, size := range []int{64, 256, 1024, 100 << 10} {
		msg := jsonLike(size)
		for level := flate.BestSpeed; level <= flate.BestCompression; level++ {
			out, ok := Deflate(msg, level)
			if !ok {
				t.Fatalf("size %d level %d: not compressed", size, level)
			}
			if len(out) >= len(msg) {
				t.Fatalf("size %d level %d: %d bytes out", size, level, len(out))
			}
			if bytes.HasSuffix(out, []byte(deflateTail)) {
				t.Fatalf("size %d level %d: the flush tail was not removed", size, level)
			}
			if got := inflate(t, out); !bytes.Equal(got, msg) {
				t.Fatalf("size %d level %d: inflated %d bytes, not the message", size, level, len(got))
			}
		}
	}
	// Random bytes do not shrink: sent as they are.
	rnd := make([]byte, 512)
	x := uint32(1)
	for i := range rnd {
		x = x*1664525 + 1013904223
		rnd[i] = byte(x >> 24)
	}
	if out, ok := Deflate(rnd, 1); ok || out != nil {
		t.Fatalf("incompressible input: ok %v, %d bytes", ok, len(out))
	}
}

// TestDeflatedFrame checks the frame header: RSV1 on text and binary
// frames that are deflated, never on others.
func TestDeflatedFrame(t *testing.T) {
	for _, tc := range []struct {
		f  Frame
		b0 byte
	}{
		{Frame{Data: []byte("x")}, 0x81},
		{Frame{Data: []byte("x"), Binary: true}, 0x82},
		{Frame{Data: []byte("x"), Deflated: true}, 0xC1},
		{Frame{Data: []byte("x"), Binary: true, Deflated: true}, 0xC2},
	} {
		if b := AppendFrame(nil, tc.f); b[0] != tc.b0 {
			t.Errorf("%+v: first byte %#x, want %#x", tc.f, b[0], tc.b0)
		}
	}
}

// BenchmarkDeflate measures one compression of a JSON message, the cost a
// publish pays once, whatever its number of subscribers.
func BenchmarkDeflate(b *testing.B) {
	for _, size := range []int{256, 1024, 16 << 10} {
		msg := jsonLike(size)
		for _, level := range []int{1, 6} {
			b.Run("size="+sizeName(size)+"/level="+strconv.Itoa(level), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(msg)))
				var out []byte
				for b.Loop() {
					out, _ = Deflate(msg, level)
				}
				b.ReportMetric(float64(len(out))/float64(len(msg)), "ratio")
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 1024 {
		return strconv.Itoa(n/1024) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// FuzzDeflate: whatever the message, what Deflate returns inflates back to
// it, and is shorter; or Deflate declines.
func FuzzDeflate(f *testing.F) {
	f.Add([]byte(`{"#":["p","news",{"title":"hi"}]}`), 1)
	f.Add(jsonLike(1024), 6)
	f.Add([]byte{}, 9)
	f.Add(bytes.Repeat([]byte{0}, 70000), 1)
	f.Fuzz(func(t *testing.T, msg []byte, level int) {
		level = flate.BestSpeed + (level%9+9)%9
		out, ok := Deflate(msg, level)
		if !ok {
			if out != nil {
				t.Fatal("declined with output")
			}
			return
		}
		if len(out) >= len(msg) {
			t.Fatalf("%d bytes compressed to %d", len(msg), len(out))
		}
		if got := inflate(t, out); !bytes.Equal(got, msg) {
			t.Fatalf("inflated %d bytes, not the %d of the message", len(got), len(msg))
		}
	})
}

// BenchmarkReadInflated reads compressed client messages of typical JSON
// (the inflater takes the payload byte by byte through payloadReader).
func BenchmarkReadInflated(b *testing.B) {
	for _, size := range []int{256, 4096} {
		b.Run(sizeName(size), func(b *testing.B) {
			msg := jsonLike(size)
			frame := cframe(0xC1, deflated(msg)) // FIN, RSV1, text
			in := bytes.Repeat(frame, b.N)
			c, err := Accept(&fakeWriter{h: http.Header{}, conn: &pipeConn{in: bytes.NewReader(in)}},
				upgradeRequest(true), &websocket.AcceptOptions{CompressionMode: websocket.CompressionNoContextTakeover})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; {
				if err := c.Wait(); err != nil {
					b.Fatal(err)
				}
				for {
					m, err := c.Next()
					if err == ErrDrained {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					if len(m.Data) != size {
						b.Fatalf("%d bytes, want %d", len(m.Data), size)
					}
					n++
				}
			}
		})
	}
}
