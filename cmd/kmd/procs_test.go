package main

import (
	"runtime"
	"testing"
)

func TestSetProcs(t *testing.T) {
	def := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(def) })
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOMAXPROCS" {
				return v
			}
			return ""
		}
	}
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
