package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/kratos-hooks/kratos-hooks/metrics"
)

// exported is every metric name the service can export.
func exported(t *testing.T) []string {
	t.Helper()
	ch := make(chan *prometheus.Desc, 1000)
	for _, c := range []prometheus.Collector{
		metrics.NewRequests(), metrics.NewJobs(), metrics.NewSync(),
		metrics.NewQueues(nil, nil, time.Second), metrics.NewReconcile(nil, time.Second), metrics.NewDependencies(nil, time.Second),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		c.Describe(ch)
	}
	close(ch)
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	var names []string
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		require.NotNil(t, m, d.String())
		names = append(names, m[1])
	}
	return names
}

var metricName = regexp.MustCompile(`\b(?:kratos_hooks|process|go)_[a-z0-9_]+`)

// requireKnown fails for a metric name in text that the service does not export (a histogram's _bucket,
// _count and _sum series count as its name; a name ending in _, as in kratos_hooks_queue_*, is a pattern).
func requireKnown(t *testing.T, names []string, where, text string) {
	t.Helper()
	for _, name := range metricName.FindAllString(text, -1) {
		if strings.HasSuffix(name, "_") {
			continue
		}
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(names, b) {
				base = b
			}
		}
		require.True(t, slices.Contains(names, base), "%s names %s, which the service does not export", where, name)
	}
}

func TestAlertRules_AreWellFormedAndNameOnlyExportedMetrics(t *testing.T) {
	t.Parallel()
	names := exported(t)
	raw, err := os.ReadFile("../docs/alerts.yml")
	require.NoError(t, err)
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&file))
	require.Len(t, file.Groups, 1)
	var alerts []string
	for _, r := range file.Groups[0].Rules {
		require.NotEmpty(t, r.Alert)
		require.NotContains(t, alerts, r.Alert)
		alerts = append(alerts, r.Alert)
		require.NotEmpty(t, r.Expr, r.Alert)
		require.Contains(t, []string{"page", "warn"}, r.Labels["severity"], r.Alert)
		require.NotEmpty(t, r.Annotations["summary"], r.Alert)
		if r.For != "" {
			_, err := time.ParseDuration(r.For)
			require.NoError(t, err, r.Alert)
		}
		requireKnown(t, names, r.Alert, r.Expr)
	}
	// What the rules must cover.
	all := string(raw)
	for _, m := range []string{"kratos_hooks_http_requests_total", "kratos_hooks_http_request_duration_seconds_bucket",
		"kratos_hooks_queue_oldest_available_job_age_seconds", `outcome=~"discarded`, "kratos_hooks_sync_lag_seconds_bucket",
		"kratos_hooks_reconcile_last_success_timestamp_seconds", "kratos_hooks_dependency_up"} {
		require.Contains(t, all, m)
	}
}

func TestDashboard_NamesOnlyExportedMetrics(t *testing.T) {
	t.Parallel()
	names := exported(t)
	raw, err := os.ReadFile("../docs/dashboard.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.NotEmpty(t, dash.Panels)
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, target := range p.Targets {
			requireKnown(t, names, p.Title, target.Expr)
		}
	}
}

func TestReadme_DocumentsEveryMetric(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	readme := string(raw)
	names := exported(t)
	for _, name := range names {
		if strings.HasPrefix(name, "kratos_hooks_") {
			require.True(t, strings.Contains(readme, "`"+name+"`"), "README does not document %s", name)
		}
	}
	// kratos_hooks_migrations is the migrations table, not a metric.
	requireKnown(t, names, "README", strings.ReplaceAll(readme, "kratos_hooks_migrations", ""))
}
