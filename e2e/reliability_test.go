package e2e_test

import (
	"os"
	"testing"
)

// The reliability suites (kill -9 torture, disk full, damage, bad input,
// concurrency) run in two sizes: a short form inside `make test`, and the
// full form under `make test-reliability`, which sets KMD_RELIABILITY=full.
// The variable is read by the tests only; the harness strips KMD_* from
// the environment it gives kmd and kmctl.
func fullRun() bool { return os.Getenv("KMD_RELIABILITY") == "full" }

// size picks a test's size: short inside make test, full in the full run.
func size(short, full int) int {
	if fullRun() {
		return full
	}
	return short
}

// tally records what a reliability test did (kills survived, entries
// checked, faults injected, bad inputs refused) as a log line
// "RELIABILITY <what> <n>"; `make test-reliability` sums those lines into
// the figures RELIABILITY.md quotes.
func tally(t testing.TB, what string, n int) {
	t.Helper()
	t.Logf("RELIABILITY %s %d", what, n)
}
