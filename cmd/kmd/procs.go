package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
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

// gcPercent is kmd's GOGC: a collection once the heap has grown by four
// times what the last one left live. kmd's live heap is a few MiB, and an
// import or a rekey allocates some 600 bytes per entry, so with Go's
// default of 100 a collection ran every 4 MiB of allocation: some 150 of
// them for an import of 1M entries, on the CPUs its inserts need.
// Alternating fresh imports of 1M, 2-3 runs each: 5.8-6.4 s at 100,
// 5.3-5.7 s at 200, 5.0-5.6 s at 400. The price is memory: a 1M rekey's
// peak RSS went from 36 to 49 MiB.
const gcPercent = 400

// setGC sets the GC percent to gcPercent, unless the environment set
// GOGC, which is left as it is.
func setGC(getenv func(string) string) int {
	if getenv("GOGC") != "" {
		return gcPercentNow()
	}
	debug.SetGCPercent(gcPercent)
	return gcPercent
}

// gcPercentNow returns the GC percent in force, read without changing it
// (GOGC=off reads as -1).
func gcPercentNow() int {
	m := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(m)
	return int(m[0].Value.Uint64())
}
