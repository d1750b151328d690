package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	"github.com/kratos-hooks/kratos-hooks/reconcile"
)

// BenchmarkReconcile: `kratos-hooks reconcile` (the built binary, its own process, under /usr/bin/time -v for
// its peak RSS) over a real Kratos holding 50,000 and then 100,000 identities, beside its floors in the same
// run:
//   - backfill: empty profiles and an empty index; the pass, then the time until every document is in the
//     index, indexed by a `kratos-hooks serve --role worker` process working the pass's index jobs;
//   - a pass with nothing to repair, over the profiles and index the backfill made;
//   - floor: a plain paging loop over the same admin list (same page size, same client);
//   - floor: a plain _bulk load of the same documents into a fresh index (1,000 per request, then a refresh).
//
// Each size is measured BENCH_RECONCILE_RUNS times (default 3), each run with a new database, index and
// service process, so the report gives the spread. BENCH_RECONCILE_SIZES (default "50000,100000") changes
// the sizes, for a quick look while working on the pass; BENCH_RECONCILE_MAPPING_FILE measures with another
// profile mapping (PROFILE_MAPPING_FILE of the pass and the service).
//
// The identities are created through the admin batch API without credentials, and kept: each size's Kratos
// database is made once per Postgres server (the larger from a copy of the smaller) and found again by later
// runs against the same server (see testenv.KeepDB).
func BenchmarkReconcile(b *testing.B) {
	sizes := benchInts(b, "BENCH_RECONCILE_SIZES", []int{50000, 100000})
	runs := benchInts(b, "BENCH_RECONCILE_RUNS", []int{3})[0]
	bin := testenv.Binary(b)
	kratosDBs := reconcileKratosDBs(b, sizes)

	var results []reconcileResult
	for i, n := range sizes {
		b.Run(fmt.Sprintf("identities=%d", n), func(b *testing.B) {
			k := testenv.StartKratos(b, testenv.KratosOpts{Database: kratosDBs[i]})
			if i == 0 {
				// One run of the first size, not measured: the services have just started, and the first
				// backfill alone paid for Elasticsearch's cold JVM (its floors, measured after it, did not).
				b.Logf("warm-up: %s", reconcileOnce(b, bin, k, n))
			}
			for run := range runs {
				b.Run(fmt.Sprintf("run=%d", run+1), func(b *testing.B) {
					r := reconcileOnce(b, bin, k, n)
					r.run = run + 1
					b.Log(r)
					b.ReportMetric(r.backfill.Seconds(), "s-backfill")
					b.ReportMetric(r.steady.wall.Seconds(), "s-steady")
					b.ReportMetric(r.paging.Seconds(), "s-paging-floor")
					b.ReportMetric(r.bulk.Seconds(), "s-bulk-floor")
					results = append(results, r)
				})
			}
		})
	}
	if len(results) == 0 {
		return
	}
	report(b, reconcileReport(results))
}

// reconcileResult is what one run measured.
type reconcileResult struct {
	identities, run int
	// paging is the plain paging loop (the mean of pagingRuns); bulk the plain _bulk load.
	paging, bulk time.Duration
	pagingRuns   [2]time.Duration
	// backfillPass is the reconcile process into empty stores; backfill runs from its start until every
	// document is in the index.
	backfillPass passRun
	backfill     time.Duration
	// serveCPU is the serve process's CPU time during the backfill (its index jobs).
	serveCPU   time.Duration
	steady     passRun
	loadBefore string
	loadAfter  string
}

func (r reconcileResult) String() string {
	return fmt.Sprintf("%d identities: backfill %s (pass %s, CPU %s, %d MiB; serve CPU %s), nothing to repair %s (CPU %s, %d MiB); floors: paging %s (%s, %s), _bulk %s; load %s → %s",
		r.identities, secs2(r.backfill), secs2(r.backfillPass.wall), secs2(r.backfillPass.cpu), r.backfillPass.maxRSSKiB>>10, secs2(r.serveCPU),
		secs2(r.steady.wall), secs2(r.steady.cpu), r.steady.maxRSSKiB>>10, secs2(r.paging), secs2(r.pagingRuns[0]),
		secs2(r.pagingRuns[1]), secs2(r.bulk), r.loadBefore, r.loadAfter)
}

func (r reconcileResult) steadyRatio() float64 { return r.steady.wall.Seconds() / r.paging.Seconds() }
func (r reconcileResult) backfillRatio() float64 {
	return r.backfill.Seconds() / (r.paging + r.bulk).Seconds()
}

func reconcileReport(results []reconcileResult) string {
	var rows []string
	for _, r := range results {
		rows = append(rows, fmt.Sprintf("| %d | %d | %s | %s | %s (%s) | %s | **%.2f** | %d | %s (%s) | **%.2f** | %d | %s |",
			r.identities, r.run, secs2(r.paging), secs2(r.bulk), secs2(r.backfillPass.wall), secs2(r.backfillPass.cpu),
			secs2(r.backfill), r.backfillRatio(), r.backfillPass.maxRSSKiB>>10, secs2(r.steady.wall), secs2(r.steady.cpu),
			r.steadyRatio(), r.steady.maxRSSKiB>>10, r.loadBefore+" → "+r.loadAfter))
	}
	var summary []string
	for _, n := range uniqueSizes(results) {
		var steady, backfill []float64
		var rssSteady, rssBackfill []int
		for _, r := range results {
			if r.identities == n {
				steady = append(steady, r.steadyRatio())
				backfill = append(backfill, r.backfillRatio())
				rssSteady = append(rssSteady, r.steady.maxRSSKiB>>10)
				rssBackfill = append(rssBackfill, r.backfillPass.maxRSSKiB>>10)
			}
		}
		summary = append(summary, fmt.Sprintf("- %d identities: nothing to repair %s × the paging loop (target ≤ 1.3); "+
			"backfill %s × (paging loop + _bulk) (target ≤ 2); peak RSS %s MiB (nothing to repair), %s MiB (backfill)",
			n, spread(steady, "%.2f"), spread(backfill, "%.2f"), spread(rssSteady, "%d"), spread(rssBackfill, "%d")))
	}
	mappingNote := " The profile mapping is the built-in one."
	if mapping := os.Getenv("BENCH_RECONCILE_MAPPING_FILE"); mapping != "" {
		mappingNote = fmt.Sprintf(" The profile mapping is %s (BENCH_RECONCILE_MAPPING_FILE), not the built-in one.", "`"+mapping+"`")
	}
	return fmt.Sprintf(`## 3. Reconcile

`+"`kratos-hooks reconcile --json`"+` (its own process, under `+"`/usr/bin/time -v`"+` for its peak RSS) over a
Kratos holding the identities (created through the admin batch API, without credentials), page size %d,
with Postgres and Elasticsearch. **Backfill**: empty `+"`profiles`"+`, empty index; timed from the start of
the process until every document is in the index (`+"`_count`"+` on the alias, polled every 100 ms, with a
`+"`_refresh`"+` before each poll once the pass has exited), the index jobs worked by a
`+"`kratos-hooks serve --role worker`"+` process.%s **Nothing to repair**: the same pass again over what the
backfill made. Floors, in the same run: a plain paging loop over the same admin list (same page size and
client; the mean of one loop before the backfill and one right after the pass with nothing to repair), and a
plain `+"`_bulk`"+` load of the same documents into a fresh index (1,000 per request, one request at a time,
then a refresh). Times in seconds (a pass's CPU time, user and system, in brackets), peak
RSS in MiB; load is the 1-minute load average before and after the run. Each size's runs use new databases,
indices and processes; one unmeasured run of the first size comes before them (the services start cold).

| identities | run | paging loop | plain _bulk | backfill pass (CPU) | backfill until all in the index | ÷ (paging + _bulk) | backfill RSS | nothing to repair (CPU) | ÷ paging | its RSS | load |
|---|---|---|---|---|---|---|---|---|---|---|---|
%s

%s`, reconcile.DefaultPageSize, mappingNote, strings.Join(rows, "\n"), strings.Join(summary, "\n"))
}

func uniqueSizes(results []reconcileResult) []int {
	var out []int
	for _, r := range results {
		if !slices.Contains(out, r.identities) {
			out = append(out, r.identities)
		}
	}
	return out
}

// spread is "min–max" of values (or the one value).
func spread[T int | float64](values []T, format string) string {
	lo, hi := slices.Min(values), slices.Max(values)
	if lo == hi {
		return fmt.Sprintf(format, lo)
	}
	return fmt.Sprintf(format+"–"+format, lo, hi)
}

func secs2(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

// reconcileOnce measures one run against Kratos k holding n identities.
func reconcileOnce(b *testing.B, bin string, k *testenv.Kratos, n int) reconcileResult {
	ctx := benchContext(b)
	r := reconcileResult{identities: n, loadBefore: loadAverage()}

	// Floor: the paging loop, with the client and page size the pass uses. It runs before the backfill and
	// again right after the pass with nothing to repair; the floor is the mean of the two, so that a change
	// of the machine's load during the run weighs on both sides.
	admin, err := kratos.NewClient(k.AdminURL, nil)
	if err != nil {
		b.Fatal(err)
	}
	pagingLoop := func() time.Duration {
		start := time.Now()
		if got := pageAll(ctx, b, admin, reconcile.DefaultPageSize); got != n {
			b.Fatalf("paging loop: %d identities, want %d", got, n)
		}
		return time.Since(start)
	}
	r.pagingRuns[0] = pagingLoop()

	// Backfill into empty stores, the index jobs worked by a serve process.
	db := testenv.NewDB(b)
	es := testenv.Elasticsearch(b)
	env := map[string]string{
		"DATABASE_URL":        db.URL,
		"KRATOS_ADMIN_URL":    k.AdminURL,
		"ELASTICSEARCH_URL":   es.URL,
		"ELASTICSEARCH_INDEX": es.Alias,
	}
	if mapping := os.Getenv("BENCH_RECONCILE_MAPPING_FILE"); mapping != "" {
		env["PROFILE_MAPPING_FILE"] = mapping
	}
	svc := startService(b, env, "serve", "--role", "worker")
	serveCPU := processCPU(svc.cmd.Process.Pid)
	searchable := make(chan time.Duration, 1)
	passDone := make(chan struct{})
	start := time.Now()
	go func() {
		// Polled every 100 ms: the resolution of the result, at a small cost to Elasticsearch. Once the pass
		// is over, each poll refreshes the index first, as the _bulk floor does once at its end: the time is
		// until every document is in the index, not until the next scheduled refresh.
		refresh := false
		for ctx.Err() == nil {
			select {
			case <-passDone:
				refresh = true
			default:
			}
			if refresh {
				if err := esRefresh(ctx, es.URL, es.Alias); err != nil {
					b.Logf("refresh: %v", err)
				}
			}
			if c, err := testenv.CountDocs(ctx, es.URL, es.Alias); err == nil && c >= n {
				searchable <- time.Since(start)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	r.backfillPass = runPass(b, bin, env)
	close(passDone)
	if got := r.backfillPass.report["profiles_inserted"]; got != float64(n) {
		b.Fatalf("backfill inserted %v profiles, want %d", got, n)
	}
	select {
	case r.backfill = <-searchable:
	case <-time.After(15 * time.Minute):
		c, err := testenv.CountDocs(ctx, es.URL, es.Alias)
		b.Fatalf("backfill: %d of %d documents in the index after 15 minutes (%v)", c, n, err)
	}
	r.serveCPU = processCPU(svc.cmd.Process.Pid) - serveCPU

	// The same pass again: nothing to repair.
	r.steady = runPass(b, bin, env)
	for _, key := range []string{"profiles_missing", "profiles_stale", "profiles_orphaned", "documents_missing", "documents_stale", "repairs_enqueued"} {
		if v := r.steady.report[key]; v != float64(0) {
			b.Fatalf("pass after the backfill: %s = %v, want 0", key, v)
		}
	}

	r.pagingRuns[1] = pagingLoop()
	r.paging = (r.pagingRuns[0] + r.pagingRuns[1]) / 2

	// Floor: a plain _bulk load of the same documents.
	r.bulk = bulkFloor(ctx, b, db.Pool, es, n)
	r.loadAfter = loadAverage()
	return r
}

// pageAll is the paging floor: the admin list, paged with the same client and page size as the pass, doing
// nothing with the identities. It returns how many it read.
func pageAll(ctx context.Context, b *testing.B, admin *kratos.Client, size int) int {
	n := 0
	for token := ""; ; {
		page, err := admin.ListIdentities(ctx, kratos.ListOpts{PageSize: size, PageToken: token})
		if err != nil {
			b.Fatalf("paging loop: %v", err)
		}
		n += len(page.Identities)
		if token = page.NextPageToken; token == "" {
			return n
		}
	}
}

// passRun is one `kratos-hooks reconcile --json` process.
type passRun struct {
	report    map[string]any
	wall      time.Duration
	maxRSSKiB int
	// cpu is the process's user and system time.
	cpu time.Duration
}

// runPass runs `kratos-hooks reconcile --json` under /usr/bin/time -v with env.
func runPass(b *testing.B, bin string, env map[string]string) passRun {
	b.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("/usr/bin/time", "-v", bin, "reconcile", "--json")
	cmd.Env = append(os.Environ(), "LOG_LEVEL=warn", "LOG_FORMAT=text")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("reconcile: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	r := passRun{wall: time.Since(start)}
	if err := json.Unmarshal(stdout.Bytes(), &r.report); err != nil {
		b.Fatalf("reconcile --json: %v: %s", err, stdout.String())
	}
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "Maximum resident set size (kbytes): "); ok {
			r.maxRSSKiB, _ = strconv.Atoi(v)
		}
		for _, prefix := range []string{"User time (seconds): ", "System time (seconds): "} {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				s, _ := strconv.ParseFloat(v, 64)
				r.cpu += time.Duration(s * float64(time.Second))
			}
		}
	}
	if r.maxRSSKiB == 0 {
		b.Fatalf("no peak RSS in the output of /usr/bin/time -v: %s", stderr.String())
	}
	return r
}

// reconcileKratosDBs returns, for each size (ascending), a Kratos database holding that many identities,
// kept on the test server between runs. Each is made from a copy of the one before, so going from 50,000 to
// 100,000 creates 50,000 more.
func reconcileKratosDBs(b *testing.B, sizes []int) []string {
	if !slices.IsSorted(sizes) {
		b.Fatalf("BENCH_RECONCILE_SIZES must be ascending, got %v", sizes)
	}
	// Named after the Kratos template (which is named after the binary) and the identities' shape: change
	// version when reconcileIdentity changes.
	const version = "v1"
	from, have := testenv.KratosTemplate(b), 0
	prefix := fmt.Sprintf("kh_bench_%s_%s_", strings.TrimPrefix(from, "kratos_tpl_"), version)
	names := make([]string, len(sizes))
	for i, n := range sizes {
		names[i] = testenv.KeepDB(b, prefix+strconv.Itoa(n), from, time.Hour,
			func(ctx context.Context, dbURL string) error {
				u, err := url.Parse(dbURL)
				if err != nil {
					return err
				}
				k := testenv.StartKratos(b, testenv.KratosOpts{Database: strings.TrimPrefix(u.Path, "/")})
				defer k.Stop()
				start := time.Now()
				if err := createReconcileIdentities(ctx, k.AdminURL, have, n); err != nil {
					return err
				}
				b.Logf("created identities %d to %d through PATCH /admin/identities in %s", have, n, time.Since(start).Round(time.Second))
				return nil
			})
		count := countIdentities(b, names[i])
		if count != n {
			b.Fatalf("kept Kratos database %s holds %d identities, not %d: drop it and run again", names[i], count, n)
		}
		from, have = names[i], n
	}
	return names
}

// createReconcileIdentities creates the identities numbered from to to (exclusive) through the admin batch
// API, without credentials (Kratos would bcrypt a password), the largest batches Kratos takes.
func createReconcileIdentities(ctx context.Context, adminURL string, from, to int) error {
	// A batch of 2,000 can take longer than the client's default 10 s.
	admin, err := kratos.NewClient(adminURL, &http.Client{Timeout: 10 * time.Minute})
	if err != nil {
		return err
	}
	for i := from; i < to; {
		batch := make([]kratos.CreateIdentityBody, min(kratos.BatchCreateLimit, to-i))
		for j := range batch {
			batch[j] = reconcileIdentity(i + j)
		}
		if _, err := admin.BatchCreateIdentities(ctx, batch); err != nil {
			return fmt.Errorf("create identities %d to %d: %w", i, i+len(batch), err)
		}
		i += len(batch)
	}
	return nil
}

// reconcileIdentity is identity number i: an e-mail address (which Kratos makes a verifiable and a recovery
// address) and a name, as a person who registered has.
func reconcileIdentity(i int) kratos.CreateIdentityBody {
	traits, _ := json.Marshal(testenv.Traits(fmt.Sprintf("person%d@reconcile.example.com", i), "Person", fmt.Sprintf("Number %d", i)))
	return kratos.CreateIdentityBody{SchemaID: "person", Traits: traits}
}

func countIdentities(b *testing.B, db string) int {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.DatabaseURL(b, db))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM identities`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// processCPU is a process's user and system time so far (0 once it is gone).
func processCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may hold spaces: utime and stime are
	// the 12th and 13th of them, in clock ticks (100 a second on Linux).
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// benchInts reads a comma-separated list of positive numbers from the environment, or returns def.
func benchInts(b *testing.B, name string, def []int) []int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want positive numbers separated by commas", name, s)
		}
		out = append(out, n)
	}
	return out
}

// loadAverage is the 1-minute load average.
func loadAverage() string {
	raw, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(raw)); len(f) > 0 {
		return f[0]
	}
	return "unknown"
}
