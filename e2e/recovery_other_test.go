//go:build !linux

package e2e_test

import "testing"

func TestRecovery(t *testing.T) { t.Skip(linuxOnly) }
