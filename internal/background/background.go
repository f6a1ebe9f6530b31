// Package background runs long maintenance work — a rekey's rewrap, its
// full count — behind the requests services are waiting on.
//
// The rekey is one goroutine that keeps a core busy for as long as it runs.
// Left at the same priority as the goroutines serving the entries API, it
// takes its full share of the CPU from them: a GET that arrives while the
// core it needs runs a batch waits for the kernel's time slice to end (one
// client's GETs, one at a time, on 2 cores: p99 1.1 ms idle, 4.9 ms during
// a 1M rekey, 3.8 ms with the rekey lowered; see also cmd/kmd's spare Ps).
// Lowered, it yields the CPU whenever a request wants it and still has all
// of whatever is idle.
package background

// Nice is the scheduling priority of the thread running background work:
// the lowest a thread can ask for without privilege, as `nice -n 19`.
const Nice = 19
