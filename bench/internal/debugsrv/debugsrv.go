// Package debugsrv serves a benchmark server process's pprof handlers and
// a small JSON report of its goroutines and heap on a side port.
package debugsrv

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
)

// Start serves /debug/pprof/ and /debug/stats on addr in the background.
// /debug/stats?gc=1 collects garbage twice first.
func Start(addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") != "" {
			runtime.GC()
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"goroutines":  runtime.NumGoroutine(),
			"heap_inuse":  ms.HeapInuse,
			"stack_inuse": ms.StackInuse,
			"heap_alloc":  ms.HeapAlloc,
			"sys":         ms.Sys,
		})
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(ln, mux) }()
	return nil
}
