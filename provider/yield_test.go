package provider

import (
	"path/filepath"
	"testing"
	"time"
)

// fakeNode is a clock on which each yield takes cost.
type fakeNode struct {
	clock  time.Time
	cost   time.Duration
	yields int
}

func newFakeNode(cost time.Duration) *fakeNode {
	return &fakeNode{clock: time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC), cost: cost}
}

func (n *fakeNode) now() time.Time { return n.clock }

func (n *fakeNode) yield() {
	n.clock = n.clock.Add(n.cost)
	n.yields++
}

// fakeRun steps a pacer steps times on a clock that advances work between
// steps and cost per yield, and returns the time worked and yielded.
func fakeRun(p *pacer, steps int, work, cost time.Duration) (worked, yielded time.Duration, yields int) {
	n := newFakeNode(cost)
	for range steps {
		n.clock = n.clock.Add(work)
		worked += work
		p.step(n.now, n.yield)
	}
	return worked, time.Duration(n.yields) * cost, n.yields
}

// On a node with CPU to spare a yield returns at once, and the rewrap
// yields at every step.
func TestPacer_YieldsEveryStepWhileYieldsCostNothing(t *testing.T) {
	var p pacer
	_, _, yields := fakeRun(&p, 10000, 40*time.Microsecond, time.Microsecond)
	if yields < 9999 { // the first step has no work before it to count
		t.Errorf("%d yields in 10000 steps whose yields took 1 µs; want one per step", yields)
	}
}

// On a node whose CPUs are busy, each yield gives up a whole time slice;
// the yields must then stay within their share of the rekey's time, or
// the rekey (and the service writes behind its batches) would crawl.
func TestPacer_BoundsTheTimeYieldedOnABusyNode(t *testing.T) {
	var p pacer
	worked, yielded, yields := fakeRun(&p, 250000, 40*time.Microsecond, 3*time.Millisecond)
	share := float64(yielded) / float64(worked)
	if share > yieldShare*1.2 {
		t.Errorf("yielded %v for %v of work (%.2f); want at most about %.2f", yielded, worked, share, yieldShare)
	}
	if share < yieldShare/2 {
		t.Errorf("yielded %v for %v of work (%.2f, %d yields); want close to %.2f: a busy node needs the yields most", yielded, worked, share, yields, yieldShare)
	}
}

// A pause between calls (between two rekeys) is not work: it earns no
// run of yields on a busy node.
func TestPacer_APauseIsNotWork(t *testing.T) {
	var p pacer
	n := newFakeNode(3 * time.Millisecond)
	p.step(n.now, n.yield)
	n.clock = n.clock.Add(time.Hour)
	for range 10 {
		n.clock = n.clock.Add(40 * time.Microsecond)
		p.step(n.now, n.yield)
	}
	if n.yields > 2 {
		t.Errorf("%d slow yields in 10 steps after an hour's pause; want at most 2", n.yields)
	}
}

// The rewrap paces itself: a rewrap of more than yieldEvery rows steps
// the store's pacer.
func TestSQLite_RewrapSteps(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "S3.db"), SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	entries := make([]Entry, 2*yieldEvery)
	for i := range entries {
		entries[i] = Entry{Name: string(rune('a'+i%26)) + string(rune('a'+i/26)), KeyID: "A", Sealed: []byte("v")}
	}
	if _, err := s.Import(t.Context(), Each(entries)); err != nil {
		t.Fatal(err)
	}
	same := func(dst []byte, _ string, sealed []byte) ([]byte, error) { return append(dst, sealed...), nil }
	if n, _, err := s.RewrapRange(t.Context(), "A", "B", 0, len(entries), same); err != nil || n != len(entries) {
		t.Fatalf("RewrapRange: %d, %v; want %d rows", n, err, len(entries))
	}
	if s.pace.last.IsZero() {
		t.Error("a rewrap of 64 rows never stepped the store's pacer")
	}
}
