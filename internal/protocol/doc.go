// Package protocol encodes and decodes the ClusterWS 3.x wire protocol.
//
// Every application frame is JSON of the form {"#":[kind,name,data]}; the
// seed-era dialect uses the key "m" instead of "#". Heartbeats are one-byte
// binary frames: '9' (ping, server to client) and 'A' (pong); the legacy
// dialect uses the text frames "#0" and "#1".
//
// The functions here are pure and safe for concurrent use. Decode never
// panics on any input; it is fuzzed (FuzzDecode).
package protocol
