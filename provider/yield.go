package provider

import "time"

// A rekey's rewrap runs on a CPU that service requests need too. Every
// yieldEvery rows it yields to Go's scheduler (runtime.Gosched), which
// lets a goroutine waiting for a P run; and to the kernel's (yieldCPU),
// which lets a thread waiting for this CPU run: the thread that answers a
// GET, or the client's. The kernel otherwise leaves a woken thread behind
// the rewrap until the rewrap's time slice ends, some milliseconds.
// bench's load during a 1M rekey on 2 CPUs, alternating runs: GET p99
// 3.8-4.8 ms without the kernel yield, 2.0-2.5 ms with it.
//
// A yield gives the CPU to whatever else is runnable, for as long as its
// slice, and on a node whose CPUs are busy with other work that is every
// time: two busy loops beside a 1M rekey under bench's load made it take
// 50 s instead of 9, with PUTs waiting behind its batches (p50 53 ms).
// So the pacer yields only while yielding has cost less than yieldShare of
// the time the rewrap worked: it slows the rekey by a quarter at most
// (10.7 s beside the busy loops, PUT p99 46 ms), and yields every time on
// a node with CPU to spare, where a yield costs a system call.
const yieldShare = 0.25

// pacerMemory is how much recent time the pacer weighs: past it, what it
// has counted is halved, so a busy minute does not stop the yields for
// the next, nor an idle one allow a run of them.
const pacerMemory = 100 * time.Millisecond

// A pacer decides when a rewrap yields the CPU to the kernel. The store's
// rewraps run on its one writer connection, one at a time, so one pacer
// per store is used by one goroutine at a time.
type pacer struct {
	last          time.Time     // the end of the last call
	work, yielded time.Duration // recent time spent between calls, and yielding
}

// step is called between rows: it accounts the work since the last call,
// and calls yield if the recent yields stayed within their share.
func (p *pacer) step(now func() time.Time, yield func()) {
	t := now()
	if d := t.Sub(p.last); d >= 0 && d < pacerMemory {
		p.work += d // longer is a pause between rekeys or batches, not work
	}
	if float64(p.yielded) <= yieldShare*float64(p.work) {
		yield()
		end := now()
		p.yielded += end.Sub(t)
		t = end
	}
	if p.work+p.yielded > pacerMemory {
		p.work /= 2
		p.yielded /= 2
	}
	p.last = t
}
