package clusterws_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/redis/go-redis/v9"

	clusterws "github.com/clusterws/clusterws-go"
	"github.com/clusterws/clusterws-go/cluster"
	"github.com/clusterws/clusterws-go/hub"
	"github.com/clusterws/clusterws-go/redisbroker"
)

// TestReadmeSnippets keeps README.md honest: a Go block that is a whole
// program must build, and any other Go block must appear, line for line,
// in this file's compiled readme* functions or in an Example.
func TestReadmeSnippets(t *testing.T) {
	blocks := readmeGoBlocks(t)
	if len(blocks) < 5 {
		t.Fatalf("found %d Go blocks in README.md", len(blocks))
	}
	sources := compiledSources(t)
	for i, b := range blocks {
		if strings.HasPrefix(b, "package ") {
			buildProgram(t, i, b)
			continue
		}
		if !containsLines(sources, b) {
			t.Errorf("README Go block %d is not in any compiled file:\n%s", i, b)
		}
	}
}

func readmeGoBlocks(t *testing.T) []string {
	f, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var cur []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && line == "```go":
			in, cur = true, nil
		case in && line == "```":
			in = false
			blocks = append(blocks, strings.Join(cur, "\n"))
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}

func compiledSources(t *testing.T) string {
	var all strings.Builder
	files, _ := filepath.Glob("*_test.go")
	more, _ := filepath.Glob("*/example_test.go")
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
		all.WriteByte('\n')
	}
	return all.String()
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
		match := true
		for j := range want {
			if have[i+j] != want[j] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// buildProgram builds a whole-program snippet in a throwaway module that
// uses this checkout.
func buildProgram(t *testing.T, i int, src string) {
	if testing.Short() {
		t.Skip("builds programs")
	}
	root, _ := os.Getwd()
	dir := t.TempDir()
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mod := strings.Replace(string(gomod), "module github.com/clusterws/clusterws-go", "module readmesnippet", 1)
	mod += "\nrequire github.com/clusterws/clusterws-go v0.0.0\nreplace github.com/clusterws/clusterws-go => " + root + "\n"
	sum, _ := os.ReadFile("go.sum")
	for name, data := range map[string][]byte{"go.mod": []byte(mod), "go.sum": sum, "main.go": []byte(src)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "build", "-mod=mod", "-o", os.DevNull, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("README program %d does not build: %v\n%s\n%s", i, err, out, src)
	}
}

// The README's fragments, compiled here.

func readmeSocketEvents(srv *clusterws.Server) {
	srv.OnConnection(func(s *hub.Socket) {
		s.On("chat", func(data json.RawMessage) {
			_ = s.Send("chat", data) // any JSON-encodable value; json.RawMessage goes as is
		})
		s.OnDisconnect(func(code hub.CloseCode, reason string) {}) // the seed's reserved 'disconnect'
		s.OnError(func(err error) {})                              // the seed's reserved 'error'
	})
}

func readmeRoutes(srv *clusterws.Server, mux *http.ServeMux) (http.Handler, http.Handler) {
	r := chi.NewRouter()
	r.Use(srv.Middleware) // chi: /ws upgrades, the routes below are untouched
	r.Get("/api/health", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })

	handler := srv.Middleware(mux) // plain net/http
	mux.Handle("/realtime", srv)   // or the handler itself on a path of your choice
	return r, handler
}

func readmePubSub(ctx context.Context, srv *clusterws.Server) (error, func()) {
	err := srv.Publish(ctx, "news", map[string]any{"title": "hi"}) // every subscriber, every process
	stop := srv.Watch("news", func(data json.RawMessage) {         // a server-side observer
		log.Printf("news: %s", data)
	})
	return err, stop
}

func readmeHooks() *clusterws.Server {
	srv, err := clusterws.New(
		clusterws.WithVerifyConnection(func(r *http.Request) error { // before the upgrade
			if r.URL.Query().Get("token") == "" {
				return &clusterws.HTTPError{Status: http.StatusUnauthorized}
			}
			return nil
		}),
		clusterws.WithOnSubscribe(func(s *hub.Socket, channel string) error { // refuse a subscription
			if strings.HasPrefix(channel, "private-") {
				return errors.New("private")
			}
			return nil
		}),
		clusterws.WithOnPublish(func(s *hub.Socket, channel string, data json.RawMessage) error {
			if len(data) > 4096 {
				return errors.New("too long") // dropped
			}
			return nil
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	return srv
}

var _ = []any{readmeSocketEvents, readmeRoutes, readmePubSub, readmeHooks}

func readmeRedis() *clusterws.Server {
	rdb := redis.NewClient(&redis.Options{Addr: "redis:6379"})
	b, err := redisbroker.New(rdb, redisbroker.Options{Prefix: "myapp:"})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := clusterws.New(clusterws.WithBroker(b))
	if err != nil {
		log.Fatal(err)
	}
	return srv
}

func readmeRedisCluster(worker func(*cluster.Worker) http.Handler) cluster.Config {
	cfg := cluster.Config{
		Workers: 4,
		Port:    8080,
		Broker: func() (hub.Broker, error) {
			return redisbroker.New(redis.NewClient(&redis.Options{Addr: "redis:6379"}), redisbroker.Options{})
		},
		Worker: worker,
	}
	return cfg
}

var _ = []any{readmeRedis, readmeRedisCluster}
