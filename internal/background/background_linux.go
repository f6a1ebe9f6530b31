package background

import (
	"fmt"
	"runtime"
	"syscall"
)

// Lower locks the calling goroutine to its OS thread and sets that thread's
// nice value to Nice. The thread is never unlocked: when the goroutine
// ends, Go discards the thread with it, so no other goroutine ever runs at
// the lowered priority. Call it first thing in a goroutine that ends when
// the background work does. On error the goroutine is still locked and the
// priority unchanged; the work can go on at normal priority.
func Lower() error {
	runtime.LockOSThread()
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), Nice); err != nil {
		return fmt.Errorf("lower the priority of thread %d to nice %d: %w", syscall.Gettid(), Nice, err)
	}
	return nil
}

// ThreadNice reports the nice value of the calling goroutine's current
// thread, for tests.
func ThreadNice() (int, error) {
	// The system call answers 20 - nice (1 to 40): glibc turns it back.
	p, err := syscall.Getpriority(syscall.PRIO_PROCESS, syscall.Gettid())
	if err != nil {
		return 0, err
	}
	return 20 - p, nil
}
