//go:build !linux

package e2e_test

import "testing"

func TestHostsRedis(t *testing.T) { t.Skip(linuxOnly) }
func TestHostsTCP(t *testing.T)   { t.Skip(linuxOnly) }
