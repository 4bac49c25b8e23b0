// Command centrifugeserver is Centrifuge (github.com/centrifugal/centrifuge)
// as a benchmark peer: one node serving the JSON protocol over WebSocket at
// /connection/websocket, with the memory broker, or with -redis the Redis
// broker so that several nodes form a cluster (run one process per node).
// Anonymous connections are accepted, client subscribe and publish are
// allowed, and the RPC methods "echo" and "whoami" answer the load
// generator. Defaults otherwise: no history, no presence, no compression.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/centrifugal/centrifuge"

	"github.com/clusterws/clusterws-go/bench/internal/debugsrv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8002", "listen address")
	redis := flag.String("redis", "", "Redis address for the Redis broker (several nodes); empty: memory broker")
	debug := flag.String("debug", "", "serve pprof and /debug/stats on this address")
	flag.Parse()

	node, err := centrifuge.New(centrifuge.Config{LogLevel: centrifuge.LogLevelError, LogHandler: func(e centrifuge.LogEntry) {
		log.Printf("centrifuge: %s %v", e.Message, e.Fields)
	}})
	if err != nil {
		log.Fatal(err)
	}
	if *redis != "" {
		shard, err := centrifuge.NewRedisShard(node, centrifuge.RedisShardConfig{Address: *redis})
		if err != nil {
			log.Fatal(err)
		}
		broker, err := centrifuge.NewRedisBroker(node, centrifuge.RedisBrokerConfig{Shards: []*centrifuge.RedisShard{shard}})
		if err != nil {
			log.Fatal(err)
		}
		node.SetBroker(broker)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	node.OnConnecting(func(context.Context, centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		return centrifuge.ConnectReply{Credentials: &centrifuge.Credentials{UserID: ""}}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		c.OnSubscribe(func(e centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			cb(centrifuge.SubscribeReply{}, nil)
		})
		c.OnPublish(func(e centrifuge.PublishEvent, cb centrifuge.PublishCallback) {
			cb(centrifuge.PublishReply{}, nil)
		})
		c.OnRPC(func(e centrifuge.RPCEvent, cb centrifuge.RPCCallback) {
			switch e.Method {
			case "whoami":
				cb(centrifuge.RPCReply{Data: pid}, nil)
			default:
				cb(centrifuge.RPCReply{Data: e.Data}, nil)
			}
		})
	})
	if err := node.Run(); err != nil {
		log.Fatal(err)
	}
	if *debug != "" {
		if err := debugsrv.Start(*debug); err != nil {
			log.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/connection/websocket", centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{}))
	hs := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(ctx)
	_ = node.Shutdown(ctx)
}
