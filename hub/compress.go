package hub

import "github.com/clusterws/clusterws-go/internal/wsconn"

// sharedFrame is a frame on its way to many sockets, compressed at most
// once: for the first socket that negotiated permessage-deflate (see
// Compression), whose compressed bytes every later such socket shares.
// Sockets without the extension, and frames under Compression.MinSize or
// that compression does not shrink, get plain. It belongs to one
// goroutine: a fan-out or a send.
type sharedFrame struct {
	plain    []byte
	deflated []byte
	tried    bool   // deflated is set, or compressing was not worth it
	sent     uint64 // deflated frames handed out, for Stats.Deflated
}

// countDeflated counts sf's deflated frames: once per fan-out, not per socket.
func (h *Hub) countDeflated(sf *sharedFrame) {
	if sf.sent > 0 {
		h.counters.deflated.Add(sf.sent)
	}
}

// frameFor returns sf as socket s takes it.
func (h *Hub) frameFor(s *Socket, sf *sharedFrame) wsconn.Frame {
	binary := h.opts.Binary
	if !s.deflate || len(sf.plain) < h.opts.Compression.MinSize {
		return wsconn.Frame{Data: sf.plain, Binary: binary}
	}
	if !sf.tried {
		sf.tried = true
		h.counters.compressed.Add(1)
		sf.deflated, _ = wsconn.Deflate(sf.plain, h.opts.Compression.Level)
	}
	if sf.deflated == nil {
		return wsconn.Frame{Data: sf.plain, Binary: binary}
	}
	sf.sent++
	return wsconn.Frame{Data: sf.deflated, Binary: binary, Deflated: true}
}
