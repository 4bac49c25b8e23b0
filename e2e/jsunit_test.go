package e2e_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestJSClientKeepsExtension runs js/keep-extension.mjs in Node against
// the browser client (../client/js/clusterws.js) and a scripted
// WebSocket: once the client has spoken the extension with a server, a
// failed handshake on a reconnect must not make it fall back to 3.x (no
// recovery, silently). It needs only node.
func TestJSClientKeepsExtension(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, filepath.Join("js", "keep-extension.mjs"),
		filepath.Join("..", "client", "js", "clusterws.js")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("node js/keep-extension.mjs: %v\n%s", err, out)
	}
}
