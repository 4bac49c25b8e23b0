package protocol

import (
	"bytes"
	"strconv"
)

// Position is a publication's place in its channel's history: the frame of
// a publish on a channel with history ends with it as a fourth element,
// {"#":["p",channel,data,{"offset":N,"epoch":"E"}]}, which the 3.x client
// ignores. Epochs are made of letters and digits only, so the position is
// written and read without escaping.
type Position struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

const posHead = `,{"offset":`

// AppendPosition returns frame, a publish frame as AppendFrame makes it,
// with pos added as its fourth element, in a new slice.
func AppendPosition(frame []byte, pos Position) []byte {
	body := frame[:len(frame)-2] // without the closing "]}"
	out := make([]byte, 0, len(frame)+len(posHead)+len(pos.Epoch)+36)
	out = append(out, body...)
	out = append(out, posHead...)
	out = strconv.AppendUint(out, pos.Offset, 10)
	out = append(out, `,"epoch":"`...)
	out = append(out, pos.Epoch...)
	return append(out, `"}]}`...)
}

// FramePosition reads the position at the end of a frame made by
// AppendPosition.
func FramePosition(frame []byte) (Position, bool) {
	if !bytes.HasSuffix(frame, []byte("]}")) {
		return Position{}, false
	}
	_, pos, ok := cutPosition(frame[:len(frame)-2])
	return pos, ok
}

// cutPosition splits `data,{"offset":N,"epoch":"E"}` into data and the
// position.
func cutPosition(b []byte) ([]byte, Position, bool) {
	i := bytes.LastIndex(b, []byte(posHead))
	if i < 0 || !bytes.HasSuffix(b, []byte(`"}`)) {
		return nil, Position{}, false
	}
	tail := b[i+len(posHead) : len(b)-2]
	digits, epoch, ok := bytes.Cut(tail, []byte(`,"epoch":"`))
	if !ok || len(digits) == 0 || len(digits) > 20 || !ValidEpoch(string(epoch)) {
		return nil, Position{}, false
	}
	offset, err := strconv.ParseUint(string(digits), 10, 64)
	if err != nil {
		return nil, Position{}, false
	}
	return bytes.TrimSpace(b[:i]), Position{Offset: offset, Epoch: string(epoch)}, true
}

// ValidEpoch reports whether e can be an epoch: 1 to 32 letters and digits.
func ValidEpoch(e string) bool {
	if len(e) == 0 || len(e) > 32 {
		return false
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}
