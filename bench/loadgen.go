package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kmd-project/kmd/api"
)

// loadOptions shape the online load: open-loop, at fixed rates.
type loadOptions struct {
	getRate, putRate int           // requests per second
	workers          int           // concurrent requests per operation at most
	warmup           time.Duration // load sent before the window, not measured
}

// opResult summarises one operation's requests over a load window.
type opResult struct {
	Count      int     `json:"count"`        // requests completed (failed ones included)
	Failures   int     `json:"failures"`     // errors, wrong status or wrong length
	P50ms      float64 `json:"p50_ms"`       // latency from the request's release (see drive)
	P99ms      float64 `json:"p99_ms"`       //
	Maxms      float64 `json:"max_ms"`       //
	P99SchedMs float64 `json:"p99_sched_ms"` // p99 from the request's scheduled start: with the load generator's own timer lateness
	P99SendMs  float64 `json:"p99_send_ms"`  // p99 from the moment a worker sent it: without waiting for a free worker
	Seconds    float64 `json:"seconds"`      // the window's length
	Throughput float64 `json:"throughput"`   // completed requests per second
	FirstError string  `json:"first_error,omitempty"`
}

// loadResult is what the loadgen subcommand prints when its stdin closes.
type loadResult struct {
	Get opResult `json:"get"`
	Put opResult `json:"put"`
}

// runLoadgen is the loadgen subcommand: a separate process that sends
// entries-API GETs and PUTs over the unix socket at fixed rates, says
// "ready" once the load has run for its warm-up, and on EOF of stdin
// prints its loadResult as JSON. Latency counts from each request's
// release, so a stall of kmd shows in every request it delays, not only
// in those in flight.
//
// The window measured begins at "ready": the requests released during the
// warm-up are sent but not counted (their failures are). The first
// requests of a load generator open its connections and meet a process
// just started: in idle windows measured from the first request, the
// first 200 ms held every GET over 5 ms, up to 110 ms, and so set the
// window's p99 (10-70 ms; 1.2-1.7 ms without them).
func runLoadgen(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	sock := fs.String("socket", "", "kmd's unix socket")
	domain := fs.String("domain", "S3", "domain")
	n := fs.Int("n", 0, "entries in the domain, named svc/entry-0000000 ... (GETs and PUTs pick among them)")
	var o loadOptions
	fs.IntVar(&o.getRate, "get-rate", 1000, "GETs per second")
	fs.IntVar(&o.putRate, "put-rate", 100, "PUTs per second")
	fs.IntVar(&o.workers, "workers", 8, "concurrent requests per operation at most")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "load sent before the measured window")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sock == "" || *n < 1 || o.workers < 1 || o.warmup < 0 {
		return errors.New("loadgen: -socket and -n >= 1 and -workers >= 1 are required, -warmup >= 0")
	}
	c := api.NewClient(*sock)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// One request of each kind before "ready": the connection is up.
	if v, _, err := c.Get(ctx, *domain, entryName(0)); err != nil || len(v) != valueSize {
		return fmt.Errorf("loadgen: first GET: %d bytes, %v", len(v), err)
	}
	get := func(rng *rand.Rand) error {
		v, _, err := c.Get(ctx, *domain, entryName(rng.IntN(*n)))
		if err == nil && len(v) != valueSize {
			err = fmt.Errorf("GET answered %d bytes, want %d", len(v), valueSize)
		}
		return err
	}
	put := func(rng *rand.Rand) error {
		val := make([]byte, valueSize)
		for i := range val {
			val[i] = byte(rng.Uint32())
		}
		_, err := c.Put(ctx, *domain, entryName(rng.IntN(*n)), val, api.PutOptions{})
		return err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var res loadResult
	var from atomic.Int64 // unix ns; requests released before it are not measured
	from.Store(math.MaxInt64)
	wg.Go(func() { res.Get = drive(stop, &from, o.getRate, o.workers, 1, get) })
	wg.Go(func() { res.Put = drive(stop, &from, o.putRate, o.workers, 2, put) })
	time.Sleep(o.warmup)
	begin := time.Now()
	from.Store(begin.UnixNano())
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	close(stop)
	wg.Wait()
	secs := time.Since(begin).Seconds()
	for _, r := range []*opResult{&res.Get, &res.Put} {
		r.Seconds = secs
		r.Throughput = float64(r.Count) / secs
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// drive schedules requests at rate per second until stop closes, runs
// them on at most workers goroutines and summarises the latencies of those
// released from *from on. Failures count whenever they were released.
//
// A request's latency counts from its release: the moment drive's timer
// woke for it and queued it for the workers. A kmd that stalls keeps the
// workers busy, so the requests released meanwhile wait in the queue, and
// that wait counts (no coordinated omission). What does not count is how
// late the timer woke: that is the load generator's own lateness, not kmd's
// (Go's timers wake some 0.5 ms late on an idle 2-core VM, and up to
// several ms when its CPUs are busy). The p99 from the scheduled start, with
// it, is reported beside.
func drive(stop <-chan struct{}, from *atomic.Int64, rate, workers int, seed uint64, do func(*rand.Rand) error) opResult {
	if rate <= 0 {
		<-stop
		return opResult{}
	}
	type job struct{ sched, released time.Time }
	jobs := make(chan job, 1<<20)
	var (
		mu    sync.Mutex
		lats  []float64
		sched []float64
		sent  []float64
		res   opResult
		wg    sync.WaitGroup
	)
	for w := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Go(func() {
			for j := range jobs {
				t0 := time.Now()
				err := do(rng)
				t1 := time.Now()
				mu.Lock()
				if j.released.UnixNano() >= from.Load() {
					lats = append(lats, t1.Sub(j.released).Seconds()*1000)
					sched = append(sched, t1.Sub(j.sched).Seconds()*1000)
					sent = append(sent, t1.Sub(t0).Seconds()*1000)
				}
				if err != nil {
					res.Failures++
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
				}
				mu.Unlock()
			}
		})
	}
	interval := time.Second / time.Duration(rate)
	next := time.Now()
loop:
	for {
		select {
		case <-stop:
			break loop
		default:
		}
		if d := time.Until(next); d > 0 {
			select {
			case <-stop:
				break loop
			case <-time.After(d):
			}
		}
		select {
		case jobs <- job{sched: next, released: time.Now()}:
		default:
			mu.Lock()
			res.Failures++
			res.FirstError = "loadgen queue full"
			mu.Unlock()
		}
		next = next.Add(interval)
	}
	close(jobs)
	wg.Wait()
	res.Count = len(lats)
	slices.Sort(lats)
	res.P50ms, res.P99ms = percentile(lats, 50), percentile(lats, 99)
	slices.Sort(sched)
	res.P99SchedMs = percentile(sched, 99)
	slices.Sort(sent)
	res.P99SendMs = percentile(sent, 99)
	if len(lats) > 0 {
		res.Maxms = lats[len(lats)-1]
	}
	return res
}

// percentile of sorted xs, nearest rank.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(float64(len(xs))*p/100+0.999999) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}
