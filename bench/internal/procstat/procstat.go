// Package procstat samples a process tree's CPU time and memory from /proc,
// and the kernel's memory for sockets, so that a benchmark can charge the
// servers it measures and nothing else.
package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, 100 on every Linux we run on.
const clockTick = 100

// Tree returns root and all its descendants, by walking /proc.
func Tree(root int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

type stat struct {
	ppid       int
	utime      uint64
	stime      uint64
	startTicks uint64
}

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("procstat: bad stat for %d", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	// f[0] is field 3 (state).
	if len(f) < 20 {
		return stat{}, fmt.Errorf("procstat: short stat for %d", pid)
	}
	var s stat
	s.ppid, _ = strconv.Atoi(f[1])
	s.utime, _ = strconv.ParseUint(f[11], 10, 64)
	s.stime, _ = strconv.ParseUint(f[12], 10, 64)
	s.startTicks, _ = strconv.ParseUint(f[19], 10, 64)
	return s, nil
}

// StartTicks returns the process's start time in clock ticks since boot,
// to tell a PID from a later process that reuses it.
func StartTicks(pid int) (uint64, error) {
	s, err := readStat(pid)
	return s.startTicks, err
}

// Sample is the summed state of a set of processes at one instant.
type Sample struct {
	At    time.Time
	CPU   time.Duration // user + system time
	RSS   int64         // VmRSS in bytes
	Procs int
}

// Take samples pids (dead ones are skipped).
func Take(pids []int) Sample {
	s := Sample{At: time.Now()}
	for _, pid := range pids {
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		s.Procs++
		s.CPU += time.Duration(st.utime+st.stime) * time.Second / clockTick
		s.RSS += rss(pid)
	}
	return s
}

func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// Kernel is the machine-wide kernel memory that sockets cost: slab caches
// (socket structs, TCP state, skbuffs) and the pages TCP accounts for
// socket buffers. Both are machine-wide: other processes' sockets count too.
type Kernel struct {
	Slab   int64 // /proc/meminfo Slab, bytes
	TCPMem int64 // /proc/net/sockstat TCP mem, bytes
}

// TakeKernel samples Kernel.
func TakeKernel() Kernel {
	var k Kernel
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Slab:") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					kb, _ := strconv.ParseInt(f[1], 10, 64)
					k.Slab = kb << 10
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/net/sockstat"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "TCP:") {
				continue
			}
			f := strings.Fields(line)
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "mem" {
					pages, _ := strconv.ParseInt(f[i+1], 10, 64)
					k.TCPMem = pages * int64(os.Getpagesize())
				}
			}
		}
	}
	return k
}

// CPUUtil returns the CPU used between a and b as a fraction of one core.
func CPUUtil(a, b Sample) float64 {
	wall := b.At.Sub(a.At)
	if wall <= 0 {
		return 0
	}
	return float64(b.CPU-a.CPU) / float64(wall)
}

// FDs returns the number of open descriptors of pid, -1 when it cannot be
// read: how close a process is to its open-file limit.
func FDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}
