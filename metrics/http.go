package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Requests counts and times the HTTP requests the service answers. Its ObserveRequest is what
// hooks.Opts.ObserveRequestFunc expects.
type Requests struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// requestBuckets resolve the hook target (p99 ≤ 10 ms) finely and still show a request that waited for the
// 2 s database deadline.
var requestBuckets = []float64{.0005, .001, .0025, .005, .0075, .01, .015, .025, .05, .1, .25, .5, 1, 2.5, 5}

// NewRequests returns the HTTP request metrics.
func NewRequests() *Requests {
	return &Requests{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests answered, by route template (never the raw path), method and status code.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "http_request_duration_seconds",
			Help:    "Time from receiving a request to its response, by route template and method.",
			Buckets: requestBuckets,
		}, []string{"route", "method"}),
	}
}

// ObserveRequest records one answered request. route must be a route template such as /admin/invites/:id.
func (m *Requests) ObserveRequest(route, method string, status int, elapsed time.Duration) {
	m.total.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route, method).Observe(elapsed.Seconds())
}

func (m *Requests) Describe(ch chan<- *prometheus.Desc) {
	m.total.Describe(ch)
	m.duration.Describe(ch)
}

func (m *Requests) Collect(ch chan<- prometheus.Metric) {
	m.total.Collect(ch)
	m.duration.Collect(ch)
}

var _ prometheus.Collector = (*Requests)(nil)
