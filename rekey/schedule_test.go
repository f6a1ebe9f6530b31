package rekey

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func TestScopeSchedule_NextAndDue(t *testing.T) {
	base := time.Date(2026, 1, 31, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		rot     string
		pending []string
		now     time.Time
		next    time.Time
		due     bool
	}{
		{"Never", nil, base.AddDate(100, 0, 0), time.Time{}, false},
		{"6W", nil, base.AddDate(0, 0, 41), base.AddDate(0, 0, 42), false},
		{"6W", nil, base.AddDate(0, 0, 42), base.AddDate(0, 0, 42), true},
		{"6W", []string{"S3"}, base.AddDate(1, 0, 0), base.AddDate(0, 0, 42), false},
		{"1M", nil, base.AddDate(0, 1, 0), base.AddDate(0, 1, 0), true},
		{"90s", nil, base.Add(89 * time.Second), base.Add(90 * time.Second), false},
		{"90s", nil, base.Add(-time.Hour), base.Add(90 * time.Second), false}, // clock went back
	}
	for _, tt := range tests {
		r, err := ParseRotation(tt.rot)
		if err != nil {
			t.Fatal(err)
		}
		s := ScopeSchedule{Rotation: r, RekeyTime: base, Pending: tt.pending}
		if got := s.Next(); !got.Equal(tt.next) {
			t.Errorf("%s: Next %v, want %v", tt.rot, got, tt.next)
		}
		if got := s.Due(tt.now); got != tt.due {
			t.Errorf("%s pending %v at %v: Due %v, want %v", tt.rot, tt.pending, tt.now, got, tt.due)
		}
	}
}

func TestScopeSchedule_Finish(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	s := ScopeSchedule{RekeyTime: time.Unix(0, 0), Pending: []string{"A", "B"}, LastResult: ResultInProgress}
	if s.Finish("C", nil, now) {
		t.Fatal("a domain outside the scope rekey finished it")
	}
	if s.Finish("A", errors.New("x"), now) || s.LastResult != ResultFailed || len(s.Pending) != 2 {
		t.Fatalf("after failure %+v", s)
	}
	if s.Finish("A", nil, now) || len(s.Pending) != 1 {
		t.Fatalf("after A %+v", s)
	}
	if !s.Finish("B", nil, now) || s.LastResult != ResultSucceeded || !s.RekeyTime.Equal(now) || s.Pending != nil {
		t.Fatalf("after B %+v", s)
	}
}

// The scheduler ticks at start, at the time tick asks for, and at least
// every maxSleep; Wake re-arms it at once.
func TestScheduler_TicksWhenAskedAndAtLeastEveryMaxSleep(t *testing.T) {
	var n atomic.Int32
	var ask atomic.Int64 // unix nanos of the next wanted tick
	s := NewScheduler(zaptest.NewLogger(t), 300*time.Millisecond, func() time.Time {
		n.Add(1)
		if v := ask.Load(); v != 0 {
			return time.Unix(0, v)
		}
		return time.Time{}
	})
	s.Start()
	defer s.Stop()
	if n.Load() != 1 {
		t.Fatalf("no tick at start")
	}
	// Nothing asked for: it still ticks every maxSleep.
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n.Load() < 4 {
		t.Fatalf("%d ticks in 10s with maxSleep 300ms", n.Load())
	}
	// Asked for a tick 50ms from now, with maxSleep far away: it comes.
	s2fired := n.Load()
	ask.Store(time.Now().Add(50 * time.Millisecond).UnixNano())
	s.Wake()
	for n.Load() < s2fired+2 && time.Now().Before(deadline.Add(5*time.Second)) {
		time.Sleep(5 * time.Millisecond)
	}
	ask.Store(0)
	before := n.Load()
	s.Wake()
	deadline = time.Now().Add(5 * time.Second)
	for n.Load() == before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n.Load() == before {
		t.Fatal("Wake did not tick")
	}
}
