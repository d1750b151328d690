package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kratos-hooks/kratos-hooks/reconcile"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// Reconcile reports the last reconcile passes from the reconcile_passes table, read at scrape time (see
// Queues for why). A pass run by `kratos-hooks reconcile` from cron exits before anyone can scrape it; it
// leaves its record in the table, so that serve reports it like a pass it ran itself.
type Reconcile struct {
	db      profilesync.Querier
	timeout time.Duration

	lastSuccess *prometheus.Desc
	lastFailure *prometheus.Desc
	drift       *prometheus.Desc
	duration    *prometheus.Desc
	identities  *prometheus.Desc
	repairs     *prometheus.Desc
}

// The kinds of drift a pass finds.
var driftKinds = []string{"profiles_missing", "profiles_stale", "profiles_orphaned", "documents_missing", "documents_stale"}

// NewReconcile returns the reconcile collector.
func NewReconcile(db profilesync.Querier, timeout time.Duration) *Reconcile {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_reconcile_"+name, help, labels, nil)
	}
	return &Reconcile{
		db: db, timeout: timeout,
		lastSuccess: desc("last_success_timestamp_seconds", "When the last completed reconcile pass finished (Unix time), whichever process ran it. Absent until one completed."),
		lastFailure: desc("last_failure_timestamp_seconds", "When the last reconcile pass that did not complete (failed, or stopped by the mass-deletion guard) finished (Unix time). Absent if none."),
		drift:       desc("drift", "Differences between Kratos and the profiles (and the search index) that the last completed pass found, by kind; it enqueued their repairs.", "kind"),
		duration:    desc("last_duration_seconds", "How long the last completed reconcile pass took."),
		identities:  desc("last_identities", "Identities the last completed reconcile pass read from Kratos."),
		repairs:     desc("last_repairs", "Repair jobs the last completed reconcile pass enqueued."),
	}
}

func (c *Reconcile) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lastSuccess, c.lastFailure, c.drift, c.duration, c.identities, c.repairs} {
		ch <- d
	}
}

func (c *Reconcile) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	last, failed, err := reconcile.LastPasses(ctx, c.db)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.lastSuccess, err)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if !failed.IsZero() {
		gauge(c.lastFailure, unixSeconds(failed))
	}
	if last == nil {
		return
	}
	gauge(c.lastSuccess, unixSeconds(last.FinishedAt))
	for i, n := range []int{last.ProfilesMissing, last.ProfilesStale, last.ProfilesOrphaned, last.DocumentsMissing, last.DocumentsStale} {
		gauge(c.drift, float64(n), driftKinds[i])
	}
	gauge(c.duration, last.Duration.Seconds())
	gauge(c.identities, float64(last.IdentitiesScanned))
	gauge(c.repairs, float64(last.RepairsEnqueued))
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

var _ prometheus.Collector = (*Reconcile)(nil)
