package clusterws_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterws/clusterws-go/client"
	"github.com/clusterws/clusterws-go/testutil"
)

// TestReadmeSnippets keeps README.md honest: every code block of Go,
// JavaScript or HTML names, on the line after it, the file it comes from
// ("<sub>From [path](path)</sub>"). A block that is a whole file (a Go block
// starting with "package ") must be that file; any other is an excerpt of
// it, line for line. The files are runnable programs and Example
// functions, which the rest of the suite builds and runs.
func TestReadmeSnippets(t *testing.T) {
	blocks := readmeBlocks(t)
	if len(blocks) < 8 {
		t.Fatalf("found %d code blocks in README.md", len(blocks))
	}
	for _, b := range blocks {
		if b.from == "" {
			t.Errorf("README.md:%d: a %s block without a <sub>From [file](file)</sub> line after it", b.line, b.lang)
			continue
		}
		src, err := os.ReadFile(b.from)
		if err != nil {
			t.Errorf("README.md:%d: %v", b.line, err)
			continue
		}
		if strings.HasPrefix(b.text, "package ") {
			if strings.TrimSpace(string(src)) != strings.TrimSpace(b.text) {
				t.Errorf("README.md:%d: the block is not the whole of %s", b.line, b.from)
			}
			continue
		}
		if !containsLines(string(src), b.text) {
			t.Errorf("README.md:%d: the block is not an excerpt of %s:\n%s", b.line, b.from, b.text)
		}
	}
}

type readmeBlock struct {
	lang, text, from string
	line             int
}

var fromLine = regexp.MustCompile(`^<sub>From \[([^\]]+)\]\(([^)]+)\)</sub>$`)

func readmeBlocks(t *testing.T) []readmeBlock {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var blocks []readmeBlock
	for i := 0; i < len(lines); i++ {
		lang, ok := strings.CutPrefix(lines[i], "```")
		if !ok || (lang != "go" && lang != "js" && lang != "html") {
			continue
		}
		b := readmeBlock{lang: lang, line: i + 1}
		var body []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			body = append(body, lines[i])
		}
		b.text = strings.Join(body, "\n")
		if i+1 < len(lines) {
			if m := fromLine.FindStringSubmatch(lines[i+1]); m != nil && m[1] == m[2] {
				b.from = m[1]
			}
		}
		blocks = append(blocks, b)
	}
	return blocks
}

// containsLines reports whether block's lines, with white space folded,
// appear consecutively in src.
func containsLines(src, block string) bool {
	norm := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if l = strings.Join(strings.Fields(l), " "); l != "" {
				out = append(out, l) // gofmt may align comments differently
			}
		}
		return out
	}
	want, have := norm(block), norm(src)
	for i := 0; i+len(want) <= len(have); i++ {
		if slices.Equal(have[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

// TestQuickstartRuns runs the Quick start's first program as a reader
// would, with go run, and chats with it.
func TestQuickstartRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a program")
	}
	bin := filepath.Join(t.TempDir(), "server")
	if out, err := exec.Command("go", "build", "-o", bin, "./examples/quickstart/1-server").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var out testutil.SyncBuffer
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0")
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	var base string
	testutil.Eventually(t, 30*time.Second, func() bool {
		_, url, ok := strings.Cut(out.String(), "open ")
		base = strings.TrimSpace(url)
		return ok && !strings.Contains(base, "\n") && base != ""
	}, "the program to print its URL; it said: %s", out.String())
	for _, path := range []string{"/", "/ws/clusterws.js"} {
		resp, err := http.Get(base + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := make(chan string, 1)
	c.On("chat", func(data json.RawMessage) { echo <- string(data) })
	if err := c.Send(ctx, "chat", "hello"); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-echo:
		if got != `"hello"` {
			t.Fatalf("echo %s", got)
		}
	case <-ctx.Done():
		t.Fatal("no echo")
	}
}
