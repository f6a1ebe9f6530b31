package main

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestSetProcs(t *testing.T) {
	def := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(def) })
	env := func(v string) func(string) string { return envWith("GOMAXPROCS", v) }
	if got := setProcs(env("3")); got != def || runtime.GOMAXPROCS(0) != def {
		t.Fatalf("GOMAXPROCS=3 in the environment: setProcs made it %d (runtime %d), want it left at %d", got, runtime.GOMAXPROCS(0), def)
	}
	for _, v := range []string{"", "0", "x"} {
		runtime.GOMAXPROCS(def)
		if got := setProcs(env(v)); got != def+spareProcs || runtime.GOMAXPROCS(0) != def+spareProcs {
			t.Fatalf("GOMAXPROCS=%q: setProcs made it %d (runtime %d), want %d", v, got, runtime.GOMAXPROCS(0), def+spareProcs)
		}
	}
}

func TestSetGC(t *testing.T) {
	def := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(def) })
	env := func(v string) func(string) string { return envWith("GOGC", v) }
	debug.SetGCPercent(150) // as GOGC=150 would have
	if got := setGC(env("150")); got != 150 || debug.SetGCPercent(150) != 150 {
		t.Fatalf("GOGC=150 in the environment: setGC made it %d, want it left at 150", got)
	}
	debug.SetGCPercent(100)
	if got := setGC(env("")); got != gcPercent || debug.SetGCPercent(100) != gcPercent {
		t.Fatalf("no GOGC: setGC made it %d, want %d", got, gcPercent)
	}
}

// envWith is a getenv whose environment holds key=v alone.
func envWith(key, v string) func(string) string {
	return func(k string) string {
		if k == key {
			return v
		}
		return ""
	}
}
