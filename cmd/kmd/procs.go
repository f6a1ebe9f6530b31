package main

import (
	"runtime"
	"strconv"
)

// spareProcs is how many more Ps (goroutines running Go code at once) kmd
// asks for than Go's default of one per CPU.
//
// kmd's writers spend much of their time in fsync: the store's commits, the
// checkpointer, the audit trail. A goroutine in a system call keeps its P
// until Go's monitor thread takes it back, which can take up to 10 ms when
// the monitor has been idle. On a node with two CPUs, a rekey's rewrap on
// one P and a checkpoint's fsync on the other left no P to answer a GET.
// bench's load (1000 GET/s, 100 PUT/s) during a 1M rekey, four runs each
// alternating, p99 from send: 10.5-12.3 ms with 2 Ps, 6.2-6.6 ms with 4;
// idle 5.0-6.7 ms against 3.3-4.9 ms. The price: more threads woken to
// look for work, some 20% more CPU per GET when idle on that VM. The
// kernel still shares the CPUs; the spare Ps only let a runnable goroutine
// run while others wait on the disk.
const spareProcs = 2

// setProcs raises GOMAXPROCS to the CPUs Go found plus spareProcs, unless
// the environment set GOMAXPROCS, which is left as it is.
func setProcs(getenv func(string) string) int {
	if v, err := strconv.Atoi(getenv("GOMAXPROCS")); err == nil && v > 0 {
		return runtime.GOMAXPROCS(0)
	}
	n := runtime.GOMAXPROCS(0) + spareProcs
	runtime.GOMAXPROCS(n)
	return n
}
