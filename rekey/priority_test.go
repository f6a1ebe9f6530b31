package rekey

import (
	"runtime"
	"sync"
	"testing"

	"github.com/kmd-project/kmd/internal/background"
	"github.com/kmd-project/kmd/provider"
)

// The rekey runs behind the services: every step on a thread at nice
// background.Nice, and no other goroutine ever runs on that thread, during
// the rekey or after it.
func TestEngine_RunsBehindServices(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("thread priorities are lowered on Linux only")
	}
	var mu sync.Mutex
	steps := map[string]int{} // step -> nice of the thread that ran it
	e := openEnv(t, t.TempDir(), envOpts{batch: 7, trace: func(step string) {
		n, err := background.ThreadNice()
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		steps[step] = n
		mu.Unlock()
	}})
	want := e.fill(100)
	// Services keep running beside the rekey, on threads of their own.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad []int
	service := func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n, _ := background.ThreadNice(); n != 0 {
				mu.Lock()
				bad = append(bad, n)
				mu.Unlock()
			}
			runtime.Gosched()
		}
	}
	for range 4 {
		wg.Go(service)
	}
	if err := e.eng.Start(provider.LocationLocal); err != nil {
		t.Fatal(err)
	}
	if err := e.wait(); err != nil {
		t.Fatal(err)
	}
	e.checkAll(want)
	// After the rekey, its thread must be gone, not back in the pool.
	for range 200 {
		wg.Go(func() {
			for range 20 {
				if n, _ := background.ThreadNice(); n != 0 {
					mu.Lock()
					bad = append(bad, n)
					mu.Unlock()
				}
				runtime.Gosched()
			}
		})
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(steps) == 0 {
		t.Fatal("no step traced")
	}
	for step, n := range steps {
		if n != background.Nice {
			t.Errorf("step %s ran at nice %d, want %d", step, n, background.Nice)
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d checks of other goroutines found their thread at nice %v, want 0", len(bad), bad[:min(len(bad), 5)])
	}
}
