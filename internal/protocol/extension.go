package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Subprotocol is the WebSocket subprotocol a client offers at the upgrade
// to speak the protocol extension; the 3.x client never offers it.
const Subprotocol = "clusterws.v2"

// System frame names of the protocol extension.
const (
	SystemPublish = "p" // client to server: {"#":["s","p",{"id":N,"channel":C,"data":D}]}
	SystemAnswer  = "a" // server to client: {"#":["s","a",{"id":N}]} or with "error":{"code","reason"}
)

// Request is a subscribe, unsubscribe or publish. ID is 0 when no answer
// is wanted: always for the 3.x forms, where the data is the channel name.
type Request struct {
	ID      uint64          `json:"id"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	// Since asks a subscribe to a channel with history to recover the
	// publications after this position first.
	Since *Position `json:"since"`
}

// RequestID returns the id of a request object that DecodeRequest refused,
// so that the client can still be answered; 0 when there is none.
func RequestID(data []byte) uint64 {
	var r struct {
		ID uint64 `json:"id"`
	}
	_ = json.Unmarshal(data, &r)
	return r.ID
}

// DecodeRequest reads the data of a system frame: a channel name (3.x),
// or, when ext is set, a request object of the extension.
func DecodeRequest(data []byte, ext bool) (Request, error) {
	if ch, ok := DecodeString(data); ok {
		return Request{Channel: ch}, nil
	}
	if !ext {
		return Request{}, ErrShape
	}
	var r Request
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil || d.More() {
		return Request{}, ErrShape
	}
	if r.Since != nil && !ValidEpoch(r.Since.Epoch) {
		return Request{}, ErrShape
	}
	return r, nil
}

// Answer returns the answer to request id: ok when code is 0, with the
// JSON members in extra (",\"k\":v..." or nothing), else an error with code
// and reason.
func (e Encoder) Answer(id uint64, code int, reason string, extra []byte) []byte {
	data := strconv.AppendUint([]byte(`{"id":`), id, 10)
	data = append(data, extra...)
	if code != 0 {
		data = append(data, `,"error":{"code":`...)
		data = strconv.AppendInt(data, int64(code), 10)
		data = append(data, `,"reason":`...)
		data = e.appendString(data, reason)
		data = append(data, '}')
	}
	data = append(data, '}')
	return e.AppendFrame(make([]byte, 0, len(data)+16), KindSystem, SystemAnswer, data)
}
