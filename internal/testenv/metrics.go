package testenv

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape is what a /metrics endpoint served, parsed as Prometheus would.
type Scrape map[string]*dto.MetricFamily

// ScrapeMetrics GETs url (a /metrics endpoint) and parses it; it returns an error for a status other than
// 200 or a body that is not the Prometheus text format, so that it can be polled.
func ScrapeMetrics(url string) (Scrape, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return Scrape(families), nil
}

// MustScrape is ScrapeMetrics that fails the test on an error.
func MustScrape(t testing.TB, url string) Scrape {
	t.Helper()
	s, err := ScrapeMetrics(url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Value returns the value of the series name with the given labels (name, value pairs; a series may have
// more). For a histogram, name_count and name_sum are its sample count and sum. ok is false when there is
// no such series.
func (s Scrape) Value(name string, labels ...string) (v float64, ok bool) {
	family, part := s[name], ""
	if family == nil {
		for _, suffix := range []string{"_count", "_sum"} {
			if base, found := strings.CutSuffix(name, suffix); found && s[base] != nil {
				family, part = s[base], suffix
			}
		}
	}
	if family == nil {
		return 0, false
	}
	for _, m := range family.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		case m.Histogram != nil && part == "_count":
			return float64(m.Histogram.GetSampleCount()), true
		case m.Histogram != nil && part == "_sum":
			return m.Histogram.GetSampleSum(), true
		}
	}
	return 0, false
}

// Get is Value without ok: 0 when there is no such series.
func (s Scrape) Get(name string, labels ...string) float64 {
	v, _ := s.Value(name, labels...)
	return v
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
