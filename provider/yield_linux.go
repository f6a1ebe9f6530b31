package provider

import "syscall"

// yieldCPU gives this thread's CPU to another runnable thread, if the
// kernel has one for it (sched_yield(2)); it returns at once if not.
func yieldCPU() {
	syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
}
