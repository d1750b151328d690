package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Sync measures the pipeline behind the hooks: how long an event takes to reach the profile, and the
// profile to reach the search index, and the bulk requests that carry documents to Elasticsearch.
type Sync struct {
	lag          *prometheus.HistogramVec
	bulkItems    prometheus.Histogram
	bulkRequests *prometheus.CounterVec
	itemFailures prometheus.Counter
}

// The stages of the sync lag.
const (
	// StageProfile: event received by a hook → profile written (sync.IdentityWorker).
	StageProfile = "profile"
	// StageDocument: profile written → its document acknowledged by Elasticsearch (sync.IndexWorker).
	StageDocument = "document"
)

// lagBuckets go from a quiet system (tens of milliseconds) to catching up after an outage (an hour).
var lagBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 300, 900, 3600}

// bulkBuckets are items per _bulk request, up to what INDEX_WORKERS lets wait at once.
var bulkBuckets = []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000}

// NewSync returns the sync pipeline metrics.
func NewSync() *Sync {
	m := &Sync{
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_lag_seconds",
			Help: "Sync lag by stage: profile = event received by a hook until the profile is written (first application of each event); " +
				"document = profile row written until Elasticsearch acknowledged its document.",
			Buckets: lagBuckets,
		}, []string{"stage"}),
		bulkItems: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "search_bulk_request_items",
			Help:    "Items (documents indexed or deleted) per _bulk request that Elasticsearch answered.",
			Buckets: bulkBuckets,
		}),
		bulkRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "search_bulk_requests_total",
			Help: "_bulk requests sent to Elasticsearch, by outcome: ok (answered) or failed (unreachable, timed out or refused as a whole; its jobs retry).",
		}, []string{"outcome"}),
		itemFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "search_bulk_item_failures_total",
			Help: "Items Elasticsearch refused inside an answered _bulk request (version conflicts with newer documents and deletes of absent ones are not failures).",
		}),
	}
	m.bulkRequests.WithLabelValues("ok")
	m.bulkRequests.WithLabelValues("failed")
	return m
}

// ObserveProfileLag records the time from an event's receipt to its profile write.
func (m *Sync) ObserveProfileLag(lag time.Duration) { m.observeLag(StageProfile, lag) }

// ObserveDocumentLag records the time from a profile write to its document's acknowledgement.
func (m *Sync) ObserveDocumentLag(lag time.Duration) { m.observeLag(StageDocument, lag) }

func (m *Sync) observeLag(stage string, lag time.Duration) {
	// The start is a database timestamp and the end this process's clock: a small skew must not make a
	// negative lag.
	m.lag.WithLabelValues(stage).Observe(max(lag, 0).Seconds())
}

// ObserveBulk records one _bulk request: err is set when the whole request failed; otherwise items is how
// many items Elasticsearch answered and failed how many of them it refused. It is what
// search.WriterOpts.ObserveBulkFunc expects.
func (m *Sync) ObserveBulk(items, failed int, err error) {
	if err != nil {
		m.bulkRequests.WithLabelValues("failed").Inc()
		return
	}
	m.bulkRequests.WithLabelValues("ok").Inc()
	m.bulkItems.Observe(float64(items))
	m.itemFailures.Add(float64(failed))
}

func (m *Sync) Describe(ch chan<- *prometheus.Desc) {
	m.lag.Describe(ch)
	m.bulkItems.Describe(ch)
	m.bulkRequests.Describe(ch)
	m.itemFailures.Describe(ch)
}

func (m *Sync) Collect(ch chan<- prometheus.Metric) {
	m.lag.Collect(ch)
	m.bulkItems.Collect(ch)
	m.bulkRequests.Collect(ch)
	m.itemFailures.Collect(ch)
}

var _ prometheus.Collector = (*Sync)(nil)
