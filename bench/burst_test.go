package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// burstSize is how many distinct identities register in one burst.
const burstSize = 10000

// burstClients is how many registration/after deliveries are in flight at once: Kratos sends each from the
// registration request's own goroutine, so a burst of sign-ups is many concurrent deliveries.
const burstClients = 64

// BenchmarkBurst: 10,000 distinct identities' registration/after events, delivered as fast as 64 clients
// can (a new connection per request, as Kratos makes them) to `kratos-hooks serve` (its own process, both
// roles) wired to a real Kratos, Postgres and Elasticsearch, and timed until every profile is in Postgres and
// every document is searchable. Beside it, in the same run, the floors:
//   - Kratos: GET /admin/identities/{id} for the same 10,000 identities one by one, at the sync workers'
//     concurrency (SYNC_WORKERS), over kept-alive connections;
//   - Elasticsearch: a plain _bulk load of the same documents into a fresh index with the same mapping,
//     1,000 per request, then a refresh.
//
// The burst is repeated BENCH_BURST_RUNS times (default 3), each with new identities, a new database, a new
// index and a new service process; the report gives every run and the median.
func BenchmarkBurst(b *testing.B) {
	ctx := benchContext(b)
	runs := 3
	if s := os.Getenv("BENCH_BURST_RUNS"); s != "" {
		var err error
		if runs, err = strconv.Atoi(s); err != nil || runs < 1 {
			b.Fatalf("BENCH_BURST_RUNS=%q: want a positive number", s)
		}
	}
	// The Kratos floor reads at the sync workers' concurrency: SYNC_WORKERS as the service gets it (from this
	// environment), or serve's default.
	syncWorkers := 200
	if s := os.Getenv("SYNC_WORKERS"); s != "" {
		var err error
		if syncWorkers, err = strconv.Atoi(s); err != nil {
			b.Fatalf("SYNC_WORKERS=%q: %v", s, err)
		}
	}
	kr := testenv.StartKratos(b, testenv.KratosOpts{})
	newBody := registrationBody(b)

	// Two warm-up bursts of full size, not measured. The services have just started, Elasticsearch's JVM
	// above all: it warms up on the service's own pattern (small external-version bulks, refreshes, counts)
	// over some 20,000 documents. With one warm-up burst the first measured run still cost Elasticsearch 3
	// times the CPU of the next two (6.7–6.9 s against 2.1–2.5 s, in two sessions); 1,000 events followed by
	// 50,000 documents bulk-written beforehand did not help.
	for i := range 2 {
		b.Logf("warm-up %d: %s", i+1, burstOnce(ctx, b, kr, newBody, syncWorkers))
	}
	b.ResetTimer()
	for range b.N {
		var results []burstResult
		for run := range runs {
			r := burstOnce(ctx, b, kr, newBody, syncWorkers)
			b.Logf("run %d: %s", run+1, r)
			results = append(results, r)
		}
		med := medianBurst(results)
		b.ReportMetric(med.searchable.Seconds(), "s-burst")
		b.ReportMetric(med.kratosFloor.Seconds(), "s-kratos-floor")
		b.ReportMetric(med.bulkFloor.Seconds(), "s-bulk-floor")

		rows := make([]string, 0, len(results)+1)
		cpu := make([]string, 0, len(results))
		for i, r := range results {
			rows = append(rows, r.row(fmt.Sprintf("run %d", i+1)))
			cpu = append(cpu, fmt.Sprintf("- run %d: %s", i+1, r.cpu))
		}
		rows = append(rows, med.row("**median**"))
		report(b, fmt.Sprintf(`## 2. Burst

%d distinct identities (created through the admin batch API, without credentials) send their
`+"`POST /hooks/registration/after`"+` as fast as %d clients can (a new connection per request) to
`+"`kratos-hooks serve`"+` (its own process, HTTP and workers, SYNC_WORKERS=%d), wired to Kratos, Postgres and
Elasticsearch. Timed from the first request until every profile is in Postgres and every document is
searchable (counted by `+"`_count`"+` on the alias). Floors, in the same run: Kratos serving the same identities one
by one (`+"`GET /admin/identities/{id}`"+`, %d at a time, kept-alive connections), and a plain `+"`_bulk`"+` load of
the same documents into a fresh index (1,000 per request, then a refresh). Target: ≤ 20 s.
%d runs, each with new identities, database, index and service process, after two unmeasured warm-up
bursts of the same size (the services start cold; Elasticsearch warms up over some 20,000 documents).

| run | load average at start | all acknowledged s | deliveries retried | all in Postgres s | all searchable s | events/s | Kratos floor s | _bulk floor s | burst ÷ (Kratos + _bulk) |
|---|---|---|---|---|---|---|---|---|---|
%s

Spread of the burst over the runs: %s to %s s. Where the CPU went during each burst (CPU seconds; "anything
else" is the rest of the machine, other work sharing these cores):

%s`, burstSize, burstClients, syncWorkers, syncWorkers, runs,
			strings.Join(rows, "\n"), secs(slices.MinFunc(results, bySearchable).searchable),
			secs(slices.MaxFunc(results, bySearchable).searchable), strings.Join(cpu, "\n")))
	}
}

// burstResult is what one burst measured, each time from the first request.
type burstResult struct {
	acked, inPostgres, searchable time.Duration
	kratosFloor, bulkFloor        time.Duration
	// retried is how many deliveries were answered with an error and sent again; cpu says where the
	// burst's CPU went; load is the machine's 1-minute load average when the run began.
	retried int
	cpu     string
	load    string
}

func (r burstResult) String() string {
	return fmt.Sprintf("load %s: acknowledged %s (%d deliveries retried), in Postgres %s, searchable %s (%.0f events/s); floors: Kratos %s, _bulk %s\nCPU during the burst: %s",
		r.load, secs(r.acked), r.retried, secs(r.inPostgres), secs(r.searchable), burstSize/r.searchable.Seconds(), secs(r.kratosFloor), secs(r.bulkFloor), r.cpu)
}

func (r burstResult) row(name string) string {
	return fmt.Sprintf("| %s | %s | %s | %d | %s | %s | %.0f | %s | %s | %.2f |", name, r.load, secs(r.acked), r.retried,
		secs(r.inPostgres), secs(r.searchable), burstSize/r.searchable.Seconds(), secs(r.kratosFloor), secs(r.bulkFloor),
		r.searchable.Seconds()/(r.kratosFloor+r.bulkFloor).Seconds())
}

func bySearchable(a, b burstResult) int { return cmp.Compare(a.searchable, b.searchable) }

// medianBurst takes the median of each column on its own.
func medianBurst(rs []burstResult) burstResult {
	med := func(get func(burstResult) time.Duration) time.Duration {
		ds := make([]time.Duration, len(rs))
		for i, r := range rs {
			ds[i] = get(r)
		}
		slices.Sort(ds)
		if len(ds)%2 == 1 {
			return ds[len(ds)/2]
		}
		return (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	return burstResult{
		retried:     int(med(func(r burstResult) time.Duration { return time.Duration(r.retried) })),
		acked:       med(func(r burstResult) time.Duration { return r.acked }),
		inPostgres:  med(func(r burstResult) time.Duration { return r.inPostgres }),
		searchable:  med(func(r burstResult) time.Duration { return r.searchable }),
		kratosFloor: med(func(r burstResult) time.Duration { return r.kratosFloor }),
		bulkFloor:   med(func(r burstResult) time.Duration { return r.bulkFloor }),
	}
}

// burstOnce runs a burst against a new service, database and index, and measures the floors beside it.
func burstOnce(ctx context.Context, b *testing.B, kr *testenv.Kratos, newBody func(ident burstIdentity) []byte, syncWorkers int) burstResult {
	b.Helper()
	db := testenv.NewDB(b)
	es := testenv.Elasticsearch(b)
	idents := createBurstIdentities(ctx, b, kr.Admin, burstSize)
	bodies := make([][]byte, len(idents))
	for i, ident := range idents {
		bodies[i] = newBody(ident)
	}
	svc := startService(b, map[string]string{
		"DATABASE_URL":        db.URL,
		"KRATOS_ADMIN_URL":    kr.AdminURL,
		"ELASTICSEARCH_URL":   es.URL,
		"ELASTICSEARCH_INDEX": es.Alias,
	}, "serve")

	// The burst: deliveries as fast as they go, and beside them, a watch on both stores.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	// Kratos makes up to 3 attempts and waits as long as a 503's Retry-After asks between them.
	var retried atomic.Int64
	post := func(ctx context.Context, i int) error {
		var err error
		for attempt := 1; attempt <= 3; attempt++ {
			var wait time.Duration
			if wait, err = deliver(ctx, client, svc.URL+"/hooks/registration/after", bodies[i]); err == nil {
				return nil
			}
			retried.Add(1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		return err
	}
	groups := []testenv.CPUGroup{
		{Name: "kratos-hooks", Matches: testenv.Process(svc.cmd.Process.Pid)},
		{Name: "kratos", Matches: testenv.Process(kr.PID())},
		{Name: "postgres (server, both databases)", Tree: true, Matches: testenv.PostgresServer(testenv.Getenv(b, testenv.EnvDatabaseURL))},
		{Name: "elasticsearch", Matches: testenv.ElasticsearchNode(es.URL)},
		{Name: "load generator", Matches: testenv.Process(os.Getpid())},
	}
	cpuBefore := testenv.SampleCPU(groups)
	r := burstResult{load: loadAverage()}
	start := time.Now()
	acked := make(chan Result, 1)
	go func() { acked <- Each(ctx, "registration/after", burstClients, len(bodies), post) }()
	// Both stores are polled every 250 ms, every 50 ms once they are close: the resolution of the result at
	// a small cost (counting 10,000 rows takes Postgres a few milliseconds).
	var res *Result
	deadline := start.Add(10 * time.Minute)
	var lastTrace time.Time
	for inPostgres := 0; r.searchable == 0; {
		select {
		case done := <-acked:
			res = &done
			if res.Failed > 0 {
				b.Fatalf("%d deliveries failed after 3 attempts, the first with: %v", res.Failed, res.FirstErr)
			}
		default:
		}
		if time.Now().After(deadline) {
			count, err := testenv.CountDocs(ctx, es.URL, es.Alias)
			b.Fatalf("not done after 10 minutes: %d profiles in Postgres, %d documents searchable (%v)", inPostgres, count, err)
		}
		searchable := 0
		if r.inPostgres == 0 {
			if inPostgres = countProfiles(ctx, b, db.Pool); inPostgres >= burstSize {
				r.inPostgres = time.Since(start)
			}
		}
		if count, err := testenv.CountDocs(ctx, es.URL, es.Alias); err == nil {
			if searchable = count; count >= burstSize && r.inPostgres != 0 {
				r.searchable = time.Since(start)
			}
		}
		if testing.Verbose() && time.Since(lastTrace) >= time.Second {
			lastTrace = time.Now()
			b.Logf("%5.1f s: %d profiles, %d documents; CPU so far: %s", time.Since(start).Seconds(), inPostgres, searchable,
				testenv.CPUReport(groups, cpuBefore, testenv.SampleCPU(groups)))
		}
		if inPostgres < burstSize*95/100 || searchable < burstSize*95/100 {
			time.Sleep(250 * time.Millisecond)
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	cpu := testenv.CPUReport(groups, cpuBefore, testenv.SampleCPU(groups))
	if res == nil {
		done := <-acked
		res = &done
	}
	if res.Failed > 0 {
		b.Fatalf("%d deliveries failed after 3 attempts, the first with: %v", res.Failed, res.FirstErr)
	}
	r.acked, r.retried, r.cpu = res.Duration, int(retried.Load()), cpu

	// Floor 1: Kratos serving the same identities one by one, as the sync workers read them.
	reader, err := kratos.NewClient(kr.AdminURL, &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: syncWorkers},
		Timeout:   30 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	kres := Each(ctx, "kratos floor", syncWorkers, len(idents), func(ctx context.Context, i int) error {
		_, err := reader.GetIdentity(ctx, idents[i].id)
		return err
	})
	if kres.Failed > 0 {
		b.Fatalf("kratos floor: %d reads failed, the first with: %v", kres.Failed, kres.FirstErr)
	}
	r.kratosFloor = kres.Duration

	// Floor 2: a plain _bulk load of the same documents.
	r.bulkFloor = bulkFloor(ctx, b, db.Pool, es, burstSize)
	return r
}

// deliver posts one hook body as Kratos does and says how long to wait before trying again if it failed.
func deliver(ctx context.Context, client *http.Client, url string, body []byte) (retryAfter time.Duration, err error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testenv.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return time.Second, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return 0, nil
	}
	retryAfter = time.Second
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		retryAfter = time.Duration(s) * time.Second
	}
	return retryAfter, fmt.Errorf("status %d", resp.StatusCode)
}

// loadAverage is the machine's 1-minute load average: other work on the same cores.
func countProfiles(ctx context.Context, b *testing.B, pool *pgxpool.Pool) int {
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE deleted_at IS NULL`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// burstIdentity is an identity made for a burst.
type burstIdentity struct {
	id     uuid.UUID
	traits map[string]any
}

// createBurstIdentities creates n identities through the admin batch API, without credentials (Kratos would
// bcrypt a password), the largest batches Kratos takes.
func createBurstIdentities(ctx context.Context, b *testing.B, admin *kratos.Client, n int) []burstIdentity {
	b.Helper()
	run := testenv.Name("burst")
	idents := make([]burstIdentity, 0, n)
	for len(idents) < n {
		size := min(kratos.BatchCreateLimit, n-len(idents))
		batch := make([]kratos.CreateIdentityBody, size)
		traits := make([]map[string]any, size)
		for i := range batch {
			k := len(idents) + i
			traits[i] = testenv.Traits(fmt.Sprintf("person%d.%s@burst.example.com", k, run), "Person", fmt.Sprintf("Number %d", k))
			raw, _ := json.Marshal(traits[i])
			batch[i] = kratos.CreateIdentityBody{SchemaID: "person", Traits: raw}
		}
		ids, err := admin.BatchCreateIdentities(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		for i, id := range ids {
			idents = append(idents, burstIdentity{id: id, traits: traits[i]})
		}
	}
	return idents
}

// registrationBody returns a function making the registration/after body Kratos sends for an identity: the
// golden rendering of jsonnet/webhook.jsonnet on a ctx captured from Kratos, with the identity's id and
// traits and a fresh flow id.
func registrationBody(b testing.TB) func(burstIdentity) []byte {
	raw, err := os.ReadFile("../jsonnet/testdata/webhook/registration-after.json")
	if err != nil {
		b.Fatal(err)
	}
	return func(ident burstIdentity) []byte {
		var doc map[string]any
		if err := json.Unmarshal(raw, &doc); err != nil {
			b.Fatal(err)
		}
		flow := doc["flow"].(map[string]any)
		flowID := uuid.NewString()
		req := doc["request"].(map[string]any)
		req["url"] = strings.ReplaceAll(req["url"].(string), flow["id"].(string), flowID)
		flow["id"] = flowID
		identity := doc["identity"].(map[string]any)
		identity["id"] = ident.id.String()
		identity["traits"] = ident.traits
		out, err := json.Marshal(doc)
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) }
