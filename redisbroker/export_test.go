package redisbroker

// Slot exposes the hash slot function to the external tests, which check
// it against a real cluster's CLUSTER KEYSLOT.
var Slot = slot

// OptionsOf returns the Options b runs with, defaults filled in.
func OptionsOf(b *Broker) Options { return b.opts }
