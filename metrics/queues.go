package metrics

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Queues reports River's queues from the river_job table: how many jobs wait in each state, and how long
// the oldest available job has been waiting.
//
// It queries when Prometheus scrapes, under a short timeout, rather than sampling on a timer: the numbers
// are as fresh as the scrape, nothing runs when nobody scrapes, there is no goroutine to stop, and a
// database that does not answer fails the scrape of these metrics visibly instead of leaving the last good
// sample to look healthy. The query groups River's own fetch index (state, queue, …); a scrape every 15 s or
// more costs the database next to nothing. Every replica reports the same shared table: aggregate with max,
// not sum.
type Queues struct {
	pool    *pgxpool.Pool
	queues  []string
	timeout time.Duration

	jobs *prometheus.Desc
	age  *prometheus.Desc
}

// queueStates are the states of jobs not yet finished. Finished ones (completed, cancelled, discarded) are
// counted as they happen by Jobs.
var queueStates = []string{"available", "scheduled", "retryable", "running"}

// NewQueues returns the queue collector. queues are reported even when they hold no job (as zeros), so that
// a quiet queue is a zero and not a gap; a queue found in the table is reported whether listed or not.
func NewQueues(pool *pgxpool.Pool, queues []string, timeout time.Duration) *Queues {
	return &Queues{
		pool: pool, queues: queues, timeout: timeout,
		jobs: prometheus.NewDesc(namespace+"_queue_jobs",
			"River jobs not yet finished, by queue and state (available = waiting for a worker; scheduled and retryable = waiting for their time; running).",
			[]string{"queue", "state"}, nil),
		age: prometheus.NewDesc(namespace+"_queue_oldest_available_job_age_seconds",
			"How long the oldest available job of the queue has been waiting for a worker (since it became available); 0 when none waits.",
			[]string{"queue"}, nil),
	}
}

const queueSQL = `
SELECT queue, state::text, count(*),
       CASE WHEN state = 'available'
            THEN greatest(extract(epoch FROM now() - min(scheduled_at)), 0)::float8
            ELSE 0 END
FROM river_job
WHERE state IN ('available', 'scheduled', 'retryable', 'running')
GROUP BY queue, state`

func (c *Queues) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.jobs
	ch <- c.age
}

func (c *Queues) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	counts, ages, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.jobs, err)
		return
	}
	queues := slices.Clone(c.queues)
	for q := range counts {
		if !slices.Contains(queues, q) {
			queues = append(queues, q)
		}
	}
	for _, q := range queues {
		for _, s := range queueStates {
			ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(counts[q][s]), q, s)
		}
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, ages[q], q)
	}
}

func (c *Queues) read(ctx context.Context) (counts map[string]map[string]int64, ages map[string]float64, err error) {
	rows, err := c.pool.Query(ctx, queueSQL)
	if err != nil {
		return nil, nil, fmt.Errorf("read queue depths: %w", err)
	}
	defer rows.Close()
	counts, ages = map[string]map[string]int64{}, map[string]float64{}
	for rows.Next() {
		var (
			queue, state string
			n            int64
			age          float64
		)
		if err := rows.Scan(&queue, &state, &n, &age); err != nil {
			return nil, nil, fmt.Errorf("read queue depths: %w", err)
		}
		if counts[queue] == nil {
			counts[queue] = map[string]int64{}
		}
		counts[queue][state] = n
		if state == "available" {
			ages[queue] = age
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read queue depths: %w", err)
	}
	return counts, ages, nil
}

var _ prometheus.Collector = (*Queues)(nil)
