// Package bench holds the load generator and the benchmarks behind `make bench`; docs/benchmarks.md has
// their latest numbers. Each benchmark is measured beside its floor (the same work done the plainest
// possible way against the same services), so the ratio holds on a noisy machine.
package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what a load run measured.
type Result struct {
	Name     string
	Sent     int
	OK       int
	Failed   int
	Duration time.Duration
	// Latencies of successful requests, sorted. For fixed-rate runs they are measured from the moment a
	// request was due, not when it was sent, so a stalled server cannot hide its queue (no coordinated
	// omission).
	Latencies []time.Duration
	FirstErr  error
}

// Quantile returns the q-quantile (0..1) of the latencies.
func (r Result) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(q * float64(len(r.Latencies)-1))
	return r.Latencies[i]
}

// Max is the largest latency.
func (r Result) Max() time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[len(r.Latencies)-1]
}

// Throughput is successful operations per second.
func (r Result) Throughput() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.OK) / r.Duration.Seconds()
}

func (r Result) String() string {
	return fmt.Sprintf("%s: %d ok, %d failed in %s (%.0f/s), p50 %s p99 %s max %s",
		r.Name, r.OK, r.Failed, r.Duration.Round(time.Millisecond), r.Throughput(),
		r.Quantile(0.5).Round(10*time.Microsecond), r.Quantile(0.99).Round(10*time.Microsecond), r.Max().Round(10*time.Microsecond))
}

type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	ok, fail  atomic.Int64
	firstErr  error
}

func (r *recorder) record(d time.Duration, err error) {
	if err != nil {
		if r.fail.Add(1) == 1 {
			r.mu.Lock()
			r.firstErr = err
			r.mu.Unlock()
		}
		return
	}
	r.ok.Add(1)
	r.mu.Lock()
	r.latencies = append(r.latencies, d)
	r.mu.Unlock()
}

func (r *recorder) result(name string, sent int, took time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	lat := slices.Clone(r.latencies)
	slices.Sort(lat)
	return Result{Name: name, Sent: sent, OK: int(r.ok.Load()), Failed: int(r.fail.Load()), Duration: took, Latencies: lat, FirstErr: r.firstErr}
}

// FixedRate sends rate operations per second for duration, open loop: an operation is started when it is
// due whether or not earlier ones have finished (up to maxInFlight at once; beyond that a due operation
// waits, and its wait counts in its latency).
func FixedRate(ctx context.Context, name string, rate int, duration time.Duration, maxInFlight int, op func(ctx context.Context, i int) error) Result {
	rec := &recorder{latencies: make([]time.Duration, 0, int(float64(rate)*duration.Seconds())+1)}
	total := int(float64(rate) * duration.Seconds())
	interval := time.Second / time.Duration(rate)
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			total = i
			break
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			err := op(ctx, i)
			rec.record(time.Since(due), err)
		}()
	}
	wg.Wait()
	return rec.result(name, total, time.Since(start))
}

// Closed runs op from concurrency workers back to back for duration: the throughput at saturation.
func Closed(ctx context.Context, name string, concurrency int, duration time.Duration, op func(ctx context.Context, i int) error) Result {
	rec := &recorder{}
	var next atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				t := time.Now()
				err := op(context.WithoutCancel(ctx), i)
				rec.record(time.Since(t), err)
			}
		})
	}
	wg.Wait()
	return rec.result(name, int(next.Load()), time.Since(start))
}

// Each runs op once for every i in [0, n) from concurrency workers back to back: a fixed amount of work as
// fast as it goes (a burst).
func Each(ctx context.Context, name string, concurrency, n int, op func(ctx context.Context, i int) error) Result {
	rec := &recorder{latencies: make([]time.Duration, 0, n)}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range min(concurrency, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t := time.Now()
				err := op(ctx, i)
				rec.record(time.Since(t), err)
			}
		})
	}
	wg.Wait()
	return rec.result(name, min(int(next.Load()), n), time.Since(start))
}
