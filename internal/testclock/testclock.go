// Package testclock has clocks for tests.
package testclock

import (
	"sync"
	"time"
)

// Step returns a clock that reads start, then moves by step at each
// further call. It is safe for concurrent use.
func Step(start time.Time, step time.Duration) func() time.Time {
	var mu sync.Mutex
	n := 0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		n++
		return start.Add(time.Duration(n-1) * step)
	}
}
