package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Dependency is something the service needs, with a check that fails while it is not usable.
type Dependency struct {
	Name      string
	CheckFunc func(ctx context.Context) error
}

// Dependencies reports whether each dependency answers its check, run at scrape time (all at once, each
// under the timeout). Unlike /health/ready, which fails only for what stops the service from accepting
// events, every dependency is reported here: an Elasticsearch or Kratos outage delays sync, and an alert
// should say so.
type Dependencies struct {
	deps    []Dependency
	timeout time.Duration
	up      *prometheus.Desc
}

// NewDependencies returns the dependency collector.
func NewDependencies(deps []Dependency, timeout time.Duration) *Dependencies {
	return &Dependencies{
		deps: deps, timeout: timeout,
		up: prometheus.NewDesc(namespace+"_dependency_up",
			"1 when the dependency answered its readiness check at this scrape, 0 when it did not.",
			[]string{"dependency"}, nil),
	}
}

func (c *Dependencies) Describe(ch chan<- *prometheus.Desc) { ch <- c.up }

func (c *Dependencies) Collect(ch chan<- prometheus.Metric) {
	up := make([]float64, len(c.deps))
	var wg sync.WaitGroup
	for i, d := range c.deps {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			defer cancel()
			if d.CheckFunc(ctx) == nil {
				up[i] = 1
			}
		})
	}
	wg.Wait()
	for i, d := range c.deps {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up[i], d.Name)
	}
}

var _ prometheus.Collector = (*Dependencies)(nil)
