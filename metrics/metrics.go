// Package metrics is the Prometheus side of kratos-hooks: every metric the service exports, the River worker
// middleware that measures jobs, and the collectors that read queue, reconcile and dependency state when
// Prometheus scrapes. The other packages know nothing of Prometheus: they report through plain functions
// (hooks.Opts.ObserveRequestFunc, sync's ObserveLagFunc, search.WriterOpts.ObserveBulkFunc) that cmd wires to
// the types here.
//
// Every type here is a prometheus.Collector: register it on the registry NewRegistry returns. There is no
// global registry.
package metrics

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every metric of this service.
const namespace = "kratos_hooks"

// NewRegistry returns a registry of its own (never the global default) holding the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves reg in the Prometheus exposition format. A collector that fails (the database did not
// answer in time) is logged and left out of that scrape; the others are still served.
func Handler(reg *prometheus.Registry, logger *slog.Logger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		// Scrapes run database queries: a pile-up of slow scrapes must not become a pile-up of connections.
		MaxRequestsInFlight: 4,
	})
}
