// Command clusterws talks to a running clusterws application from the
// command line: it publishes to a channel, through the HTTP API (package
// api) or straight into the Redis broker, and shows the servers' stats.
//
//	export CLUSTERWS_API_KEY=...   # the key of cluster.Config.APIKey or api.Options.Key
//	clusterws publish news '{"title":"hi"}'
//	clusterws publish --redis 127.0.0.1:6379 news '{"title":"hi"}'
//	clusterws stats
//
// Run clusterws help, or clusterws COMMAND --help, for every flag.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clusterws/clusterws-go/api"
	"github.com/clusterws/clusterws-go/internal/protocol"
	"github.com/clusterws/clusterws-go/redisbroker"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `clusterws talks to a running clusterws application.

Usage:
  clusterws publish [flags] CHANNEL DATA   publish DATA (JSON) to every subscriber of CHANNEL
  clusterws stats [flags]                  show every server's connections and counters
  clusterws help                           show this text

publish goes through the HTTP API of the application (the admin listener
of cluster.Run, or wherever api.New is mounted), or with --redis straight
into the Redis that its redisbroker uses, encoded as the workers encode
their own publishes, so that it reaches every subscriber on every host.

The API needs its key: --key, or the environment variable
CLUSTERWS_API_KEY. The API's address: --api, or CLUSTERWS_API
(default http://127.0.0.1:9100).

Exit status: 0 done, 1 the server or Redis refused or failed, 2 bad usage.
Run 'clusterws COMMAND --help' for a command's flags.
`

// exit statuses
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "publish":
		return publish(args[1:], stdout, stderr)
	case "stats":
		return stats(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && (args[1] == "publish" || args[1] == "stats") {
			return run([]string{args[1], "--help"}, stdout, stderr) // help publish: its flags
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "clusterws: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// apiFlags are the flags of every command that uses the HTTP API.
type apiFlags struct {
	url, key string
	timeout  time.Duration
}

func (f *apiFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("CLUSTERWS_API")
	if def == "" {
		def = "http://127.0.0.1:9100"
	}
	fs.StringVar(&f.url, "api", def, "base URL of the HTTP API (env CLUSTERWS_API)")
	fs.StringVar(&f.key, "key", "", "the API key; default: the environment variable CLUSTERWS_API_KEY, which is better (flags show in ps)")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up after this long")
}

// call makes an API request and decodes a 200 answer into out.
func (f *apiFlags) call(method, path string, body, out any) error {
	key := f.key
	if key == "" {
		key = os.Getenv("CLUSTERWS_API_KEY")
	}
	if key == "" {
		return errors.New("no API key: set CLUSTERWS_API_KEY or pass --key")
	}
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(f.url, "/")+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %s", resp.Status, e.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// newFlagSet returns a FlagSet whose --help prints the command's text.
func newFlagSet(name, text string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, text, "\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

const publishUsage = `Usage: clusterws publish [flags] CHANNEL DATA

Publishes DATA, a JSON value ('{"a":1}', '"text"', 42), to every subscriber
of CHANNEL in every process and host, exactly as the application's own
Server.Publish does. With --string, DATA is sent as a JSON string.

Through the HTTP API (the default), the application checks the key and
publishes through its broker. With --redis, clusterws connects to that
Redis and publishes the encoded frame itself, with the package redisbroker
that the workers use: no API and no key needed, but the same --redis-prefix
as the workers' redisbroker.Options.Prefix, and --binary if they use
clusterws.WithBinary(true). Such a publication reaches live subscribers
only: it skips the history of a channel that keeps one (no position, not
replayed after a reconnect); publish through the API for that.
`

func publish(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("publish", publishUsage, stderr)
	var af apiFlags
	af.register(fs)
	redisAddr := fs.String("redis", "", "publish straight into the Redis at this address (host:port), not through the API")
	redisCluster := fs.Bool("redis-cluster", false, "with --redis: the address is a node of a Redis Cluster")
	prefix := fs.String("redis-prefix", redisbroker.DefaultPrefix, "with --redis: the workers' redisbroker.Options.Prefix")
	binary := fs.Bool("binary", false, "with --redis: encode as workers with clusterws.WithBinary(true) do")
	asString := fs.Bool("string", false, "send DATA as a JSON string")
	if err := fs.Parse(args); err != nil {
		return parseStatus(err)
	}
	if fs.NArg() != 2 {
		fmt.Fprint(stderr, "clusterws publish: want CHANNEL and DATA\n\n")
		fs.Usage()
		return exitUsage
	}
	channel, data := fs.Arg(0), json.RawMessage(fs.Arg(1))
	if *asString {
		data, _ = json.Marshal(fs.Arg(1))
	}
	if channel == "" || !json.Valid(data) {
		fmt.Fprintf(stderr, "clusterws publish: DATA must be JSON (got %q); use --string for text\n", fs.Arg(1))
		return exitUsage
	}
	var err error
	if *redisAddr != "" {
		err = publishRedis(*redisAddr, *redisCluster, *prefix, *binary, af.timeout, channel, data)
	} else {
		err = af.call(http.MethodPost, "/api/publish", map[string]any{"channel": channel, "data": data}, nil)
	}
	if err != nil {
		fmt.Fprintf(stderr, "clusterws publish: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "published to %s\n", channel)
	return exitOK
}

// publishRedis publishes data to channel through a redisbroker.Broker of
// its own, and waits until Redis has acknowledged it.
func publishRedis(addr string, cluster bool, prefix string, binary bool, timeout time.Duration, channel string, data []byte) error {
	var client redis.UniversalClient
	if cluster {
		client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}})
	} else {
		client = redis.NewClient(&redis.Options{Addr: addr})
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", addr, err)
	}
	b, err := redisbroker.New(client, redisbroker.Options{Prefix: prefix})
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Start(func(string, []byte) {}); err != nil {
		return err
	}
	enc := protocol.Encoder{ASCII: binary}
	frame := enc.AppendFrame(nil, protocol.KindPublish, channel, data)
	if err := b.Publish(ctx, channel, frame); err != nil {
		return err
	}
	if err := b.Flush(ctx); err != nil {
		return err
	}
	if st := b.Stats(); st.Published != 1 {
		return fmt.Errorf("redis did not acknowledge the publish (%+v)", st)
	}
	return nil
}

const statsUsage = `Usage: clusterws stats [flags]

Shows the connections, channels and counters of every server behind the
HTTP API (under cluster.Run, of every worker and their total), from
GET /api/stats. With --json, prints the answer as it came.
`

func stats(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("stats", statsUsage, stderr)
	var af apiFlags
	af.register(fs)
	asJSON := fs.Bool("json", false, "print the JSON answer")
	if err := fs.Parse(args); err != nil {
		return parseStatus(err)
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return exitUsage
	}
	var resp api.StatsResponse
	if err := af.call(http.MethodGet, "/api/stats", nil, &resp); err != nil {
		fmt.Fprintf(stderr, "clusterws stats: %v\n", err)
		return exitFail
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(resp)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tready\tconnections\tchannels\tsubscriptions\taccepted\tclosed\tpublished\tdelivered\tignored\trefused\tslow\tqueued_bytes\t")
	row := func(name string, s api.Stats) {
		fmt.Fprintf(tw, "%s\t%v\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", name, s.Ready, s.Connections, s.Channels,
			s.Subscriptions, s.Accepted, s.Closed, s.Published, s.Delivered, s.Ignored, s.Refused, s.SlowConsumers, s.QueuedBytes)
	}
	ids := make([]string, 0, len(resp.Workers))
	for id := range resp.Workers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return len(ids[i]) < len(ids[j]) || len(ids[i]) == len(ids[j]) && ids[i] < ids[j] })
	for _, id := range ids {
		row("worker "+id, resp.Workers[id])
	}
	row("total", resp.Total)
	_ = tw.Flush()
	return exitOK
}

// parseStatus is the exit status after a flag parsing error: 0 for
// --help, which printed the usage.
func parseStatus(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}
