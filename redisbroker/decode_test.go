package redisbroker

import (
	"strings"
	"testing"
)

// FuzzParseEntry: any value in a presence hash, written by anyone, is
// either refused or split into a lease and a user that write back to it.
func FuzzParseEntry(f *testing.F) {
	f.Add(entry(newLease(), "alice"))
	f.Add(entry(newLease(), ""))
	f.Add(entry(newLease(), "ü \"x\" 😀"))
	f.Add("short")
	f.Add("abc{}defghijk")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		lease, user, ok := parseEntry(v)
		if !ok {
			return
		}
		if len(lease) != leaseLen || strings.Trim(lease, tagAlphabet) != "" {
			t.Fatalf("parseEntry(%q) accepted the lease %q", v, lease)
		}
		if entry(lease, user) != v {
			t.Fatalf("parseEntry(%q) = %q, %q, which write back as %q", v, lease, user, entry(lease, user))
		}
	})
}
