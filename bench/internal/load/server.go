package load

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/clusterws/clusterws-go/bench/internal/procstat"
)

// Server is the system under test as seen from /proc: the root PIDs of its
// process trees (none: nothing sampled) and the debug endpoints of its Go
// processes, which report goroutines and heap.
type Server struct {
	PIDs      []int
	DebugURLs []string
}

// Sample samples the CPU and RSS of the whole process trees.
func (s *Server) Sample() procstat.Sample {
	if s == nil || len(s.PIDs) == 0 {
		return procstat.Sample{At: time.Now()}
	}
	var pids []int
	for _, p := range s.PIDs {
		pids = append(pids, procstat.Tree(p)...)
	}
	return procstat.Take(pids)
}

// GoStats is what the benchmark servers' /debug/stats reports, summed.
type GoStats struct {
	Goroutines int    `json:"goroutines"`
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	Procs      int    `json:"-"`
}

// GoStats sums the debug endpoints' reports; gc makes each process
// collect garbage first. ok is false when there are none.
func (s *Server) GoStats(gc bool) (GoStats, bool) {
	var out GoStats
	if s == nil {
		return out, false
	}
	cl := http.Client{Timeout: 10 * time.Second}
	for _, u := range s.DebugURLs {
		url := u + "/debug/stats"
		if gc {
			url += "?gc=1"
		}
		resp, err := cl.Get(url)
		if err != nil {
			continue
		}
		var g GoStats
		err = json.NewDecoder(resp.Body).Decode(&g)
		resp.Body.Close()
		if err != nil {
			continue
		}
		out.Goroutines += g.Goroutines
		out.HeapInuse += g.HeapInuse
		out.StackInuse += g.StackInuse
		out.Procs++
	}
	return out, out.Procs > 0
}

// MaxFDs returns the most descriptors any process of the trees holds.
func (s *Server) MaxFDs() int {
	most := -1
	if s == nil {
		return most
	}
	for _, p := range s.PIDs {
		for _, pid := range procstat.Tree(p) {
			most = max(most, procstat.FDs(pid))
		}
	}
	return most
}
