//go:build !linux

package provider

// yieldCPU does nothing where kmd has no sched_yield(2) of the kernel's;
// runtime.Gosched still yields to Go's scheduler.
func yieldCPU() {}
