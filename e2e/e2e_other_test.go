//go:build !linux

package e2e_test

import "testing"

func TestChatAcrossWorkers(t *testing.T) {
	t.Skip("the e2e test needs Linux: it runs Debian's chromium and tracks its processes through /proc")
}
