// Command wsdebug sends text messages to a WebSocket endpoint and prints
// every message the server sends back, for checking protocol details.
//
//	wsdebug -addr 127.0.0.1:8002 -path /connection/websocket '{"id":1,"connect":{}}' '{"id":2,"subscribe":{"channel":"a"}}'
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/clusterws/clusterws-go/internal/wsc"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8001", "host:port")
	path := flag.String("path", "/ws", "URL path")
	wait := flag.Duration("wait", time.Second, "how long to print replies")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := wsc.Dial(ctx, *addr, *path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	for _, m := range flag.Args() {
		if err := c.WriteMessage(wsc.OpText, []byte(m)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = c.SetDeadline(time.Now().Add(*wait))
	for {
		op, b, err := c.ReadMessage()
		if err != nil {
			fmt.Println("end:", err)
			return
		}
		fmt.Printf("op=%d %q\n", op, b)
	}
}
