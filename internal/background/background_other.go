//go:build !linux

package background

import "runtime"

// Lower locks the calling goroutine to its OS thread; other systems than
// Linux keep the thread's priority (their per-thread priorities differ).
func Lower() error {
	runtime.LockOSThread()
	return nil
}

// ThreadNice reports 0: the priority is not lowered on this system.
func ThreadNice() (int, error) { return 0, nil }
