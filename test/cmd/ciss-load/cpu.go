package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat CPU times (100 on every
// Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// cpuSnap is CPU time (user+system) used so far, by process: "self" is this
// process (the embedded NATS server and the load generator), every other key a
// child's command name, including the CPU of its own children (trivy under the
// worker). machineKey holds the busy time of the whole machine, so that what
// other processes used in the meantime shows.
type cpuSnap map[string]time.Duration

const (
	machineKey = "(machine)"
	exitedKey  = "(exited children)"
)

// machineBusy is the non-idle CPU time of all CPUs from /proc/stat.
func machineBusy() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var busy time.Duration
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, _ := strconv.ParseInt(f[i], 10, 64)
		busy += time.Duration(v) * clockTick
	}
	return busy, true
}

type procStat struct {
	pid, ppid int
	comm      string
	own, kids time.Duration // utime+stime, cutime+cstime
}

// readProc reads /proc/<pid>/stat; ok is false when the process is gone.
func readProc(pid int) (procStat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return procStat{}, false
	}
	f := strings.Fields(s[closing+1:])
	if len(f) < 15 {
		return procStat{}, false
	}
	n := func(i int) time.Duration { v, _ := strconv.ParseInt(f[i], 10, 64); return time.Duration(v) * clockTick }
	ppid, _ := strconv.Atoi(f[1])
	return procStat{pid: pid, ppid: ppid, comm: s[open+1 : closing], own: n(11) + n(12), kids: n(13) + n(14)}, true
}

// cpuNow attributes the CPU time of this process's descendants to its direct
// children. Best effort: an unreadable /proc yields only "self".
func cpuNow() cpuSnap {
	snap := cpuSnap{}
	if busy, ok := machineBusy(); ok {
		snap[machineKey] = busy
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		snap["self"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// Children this process has waited for: within a phase, only the direct
	// Trivy runs (components exit only between phases).
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		snap[exitedKey] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return snap
	}
	procs := map[int]procStat{}
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if p, ok := readProc(pid); ok {
				procs[pid] = p
			}
		}
	}
	self := os.Getpid()
	for _, p := range procs {
		// Walk up to the direct child of this process, if any.
		top, cur := "", p
		for range 64 {
			if cur.ppid == self {
				top = cur.comm
				break
			}
			parent, ok := procs[cur.ppid]
			if !ok {
				break
			}
			cur = parent
		}
		if top == "" {
			continue
		}
		snap[top] += p.own
		if p.ppid == self {
			snap[top] += p.kids // waited-for descendants, e.g. finished trivy runs
		}
	}
	return snap
}

// since returns the CPU used between from and s, per process.
func (s cpuSnap) since(from cpuSnap) cpuSnap {
	d := cpuSnap{}
	for k, v := range s {
		d[k] = v - from[k]
	}
	return d
}
