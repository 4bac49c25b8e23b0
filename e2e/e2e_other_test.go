//go:build !linux

package e2e_test

import "testing"

const linuxOnly = "the e2e tests need Linux: they run Debian's chromium and track its processes through /proc"

func TestJSClient(t *testing.T)          { t.Skip(linuxOnly) }
func TestChatAcrossWorkers(t *testing.T) { t.Skip(linuxOnly) }
func TestChatNpmClient(t *testing.T)     { t.Skip(linuxOnly) }
