package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// loginBody returns a function making realistic login/after bodies: the golden rendering of
// jsonnet/webhook.jsonnet on a ctx captured from Kratos, with a fresh flow and identity id each time.
func loginBody(b testing.TB) func() []byte {
	raw, err := os.ReadFile("../jsonnet/testdata/webhook/login-after.json")
	if err != nil {
		b.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		b.Fatal(err)
	}
	oldFlow := doc["flow"].(map[string]any)["id"].(string)
	oldIdentity := doc["identity"].(map[string]any)["id"].(string)
	template := string(raw)
	return func() []byte {
		s := strings.ReplaceAll(template, oldFlow, uuid.NewString())
		return []byte(strings.ReplaceAll(s, oldIdentity, uuid.NewString()))
	}
}

// BenchmarkHookAcknowledgement: /hooks/login/after at fixed rates and at saturation, against a
// `kratos-hooks serve --role http` process, beside the floor: a bare single-row INSERT + commit through pgx
// at the same concurrency against the same Postgres. Every request opens a new connection, as Kratos's
// webhook client does (it makes a new HTTP client per call).
func BenchmarkHookAcknowledgement(b *testing.B) {
	ctx := benchContext(b)
	db := testenv.NewDB(b)
	svc := startService(b, map[string]string{"DATABASE_URL": db.URL, "KRATOS_ADMIN_URL": "http://127.0.0.1:1"}, "serve", "--role", "http")
	next := loginBody(b)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	post := func(ctx context.Context, _ int) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, svc.URL+"/hooks/login/after", bytes.NewReader(next()))
		req.Header.Set("Authorization", "Bearer "+testenv.APIKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}

	const concurrency = 32
	floorPool, err := pgxpool.New(ctx, db.URL+"&pool_max_conns=32")
	if err != nil {
		b.Fatal(err)
	}
	defer floorPool.Close()
	if _, err := floorPool.Exec(ctx, `CREATE TABLE bench_floor (id uuid PRIMARY KEY, body jsonb NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	floorRow := next()
	insert := func(ctx context.Context, _ int) error {
		_, err := floorPool.Exec(ctx, `INSERT INTO bench_floor (id, body) VALUES ($1, $2)`, uuid.New(), floorRow)
		return err
	}

	b.ResetTimer()
	for range b.N {
		var rows []string
		for _, run := range []struct {
			rate     int
			duration time.Duration
		}{{100, 20 * time.Second}, {1000, 10 * time.Second}, {3000, 5 * time.Second}} {
			r := FixedRate(ctx, fmt.Sprintf("%d/s", run.rate), run.rate, run.duration, 512, post)
			b.Log(r)
			rows = append(rows, fmt.Sprintf("| %d req/s | %d | %d | %.0f | %s | %s | %s |", run.rate, r.OK, r.Failed, r.Throughput(), ms(r.Quantile(0.5)), ms(r.Quantile(0.99)), ms(r.Max())))
			if run.rate == 1000 {
				b.ReportMetric(float64(r.Quantile(0.99).Microseconds())/1000, "p99-ms@1000/s")
			}
		}
		sat := Closed(ctx, "saturation", concurrency, 10*time.Second, post)
		floor := Closed(ctx, "bare insert", concurrency, 10*time.Second, insert)
		b.Log(sat)
		b.Log(floor)
		b.ReportMetric(sat.Throughput(), "req/s-saturated")
		b.ReportMetric(floor.Throughput(), "inserts/s-floor")
		rows = append(rows,
			fmt.Sprintf("| saturation, %d clients | %d | %d | %.0f | %s | %s | %s |", concurrency, sat.OK, sat.Failed, sat.Throughput(), ms(sat.Quantile(0.5)), ms(sat.Quantile(0.99)), ms(sat.Max())),
			fmt.Sprintf("| floor: bare INSERT + commit, %d clients | %d | %d | %.0f | %s | %s | %s |", concurrency, floor.OK, floor.Failed, floor.Throughput(), ms(floor.Quantile(0.5)), ms(floor.Quantile(0.99)), ms(floor.Max())),
		)
		report(b, fmt.Sprintf(`## 1. Hook acknowledgement

%s against `+"`kratos-hooks serve --role http`"+` (its own process), a new connection per request as Kratos
makes them; latency measured from when each request was due (open loop). Target: p99 ≤ 10 ms at 1,000/s,
saturation ≥ ¼ of the bare-insert floor.

| load | ok | failed | throughput/s | p50 ms | p99 ms | max ms |
|---|---|---|---|---|---|---|
%s

Saturation is **%.2f×** the floor (target ≥ 0.25).`, "`POST /hooks/login/after`", strings.Join(rows, "\n"), sat.Throughput()/floor.Throughput()))
	}
}
