//go:build reconcilebench

package reconcile

// The reconcile measurements of the README and the issue: not part of the test suite (the build tag keeps
// it out of `go test ./...` and CI). It needs the services of the tests; scripts/test.sh provides them:
//
//	scripts/test.sh -tags reconcilebench -run TestMeasureReconcile -v -timeout 60m ./reconcile/
//
// It creates identities in a real Kratos through the admin batch API (no credentials, so no password
// hashing), then times, on this machine: a plain paging loop over the admin list, a backfill into an empty
// database and a pass with nothing to repair, each pass run as the built binary under /usr/bin/time -v for
// its peak RSS. MEASURE_IDENTITIES (default "20000,40000") sets the sizes.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

func TestMeasureReconcile(t *testing.T) {
	sizes := []int{20000, 40000}
	if s := os.Getenv("MEASURE_IDENTITIES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			require.NoError(t, err)
			sizes = append(sizes, n)
		}
	}
	ctx := testenv.Context(t)
	bin := filepath.Join(t.TempDir(), "kratos-hooks")
	build := exec.Command("go", "build", "-o", bin, "../cmd/kratos-hooks")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())

	k := testenv.StartKratos(t, testenv.KratosOpts{})
	// Creating 2,000 identities in one call can take longer than the client's default 10 s timeout.
	slowAdmin, err := kratos.NewClient(k.AdminURL, &http.Client{Timeout: 5 * time.Minute})
	require.NoError(t, err)
	var results []string
	note := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		results = append(results, line)
		t.Log(line)
	}
	note("machine: %d cores (GOMAXPROCS %d), %s; Kratos v1.3.1 on Postgres, all on 127.0.0.1; load average %s",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), cpuModel(), loadAverage())
	defer func() { note("load average at the end: %s", loadAverage()) }()

	have := 0
	for _, n := range sizes {
		start := time.Now()
		createIdentities(t, ctx, slowAdmin, n-have)
		note("created %d identities through PATCH /admin/identities in %s", n-have, time.Since(start).Round(time.Millisecond))
		have = n

		for i := range 2 {
			start = time.Now()
			pages, scanned := pageAll(t, ctx, k.Admin, DefaultPageSize)
			note("%d identities: plain paging loop (page size %d, run %d): %d pages, %d identities in %s",
				n, DefaultPageSize, i+1, pages, scanned, time.Since(start).Round(time.Millisecond))
		}

		db := testenv.NewDB(t)
		env := []string{"DATABASE_URL=" + db.URL, "KRATOS_ADMIN_URL=" + k.AdminURL, "LOG_LEVEL=warn", "LOG_FORMAT=text"}
		backfill := runMeasured(t, bin, env)
		require.EqualValues(t, n, backfill.report["profiles_inserted"])
		note("%d identities: backfill into an empty database: pass %.2fs (process %s), peak RSS %d MiB",
			n, backfill.report["duration_seconds"], backfill.wall, backfill.maxRSSKiB/1024)
		for i := range 2 {
			steady := runMeasured(t, bin, env)
			require.EqualValues(t, 0, steady.report["profiles_missing"])
			require.EqualValues(t, 0, steady.report["profiles_stale"])
			note("%d identities: pass with nothing to repair (run %d): pass %.2fs (process %s), peak RSS %d MiB",
				n, i+1, steady.report["duration_seconds"], steady.wall, steady.maxRSSKiB/1024)
		}
	}
	t.Cleanup(func() { fmt.Println(strings.Join(results, "\n")) })
}

func createIdentities(t *testing.T, ctx context.Context, admin *kratos.Client, n int) {
	for done := 0; done < n; {
		bodies := make([]kratos.CreateIdentityBody, min(n-done, kratos.BatchCreateLimit))
		for i := range bodies {
			traits, _ := json.Marshal(testenv.Traits(testenv.Email("bench"), "Bench", fmt.Sprint("User", done+i)))
			bodies[i] = kratos.CreateIdentityBody{SchemaID: "person", Traits: traits}
		}
		_, err := admin.BatchCreateIdentities(ctx, bodies)
		require.NoError(t, err)
		done += len(bodies)
	}
}

// pageAll is the baseline: the same admin list, paged with the same client and page size, doing nothing.
func pageAll(t *testing.T, ctx context.Context, admin *kratos.Client, size int) (pages, identities int) {
	for token := ""; ; {
		page, err := admin.ListIdentities(ctx, kratos.ListOpts{PageSize: size, PageToken: token})
		require.NoError(t, err)
		pages++
		identities += len(page.Identities)
		if token = page.NextPageToken; token == "" {
			return pages, identities
		}
	}
}

type measured struct {
	report    map[string]any
	wall      time.Duration
	maxRSSKiB int
}

// runMeasured runs `kratos-hooks reconcile --json` under /usr/bin/time -v.
func runMeasured(t *testing.T, bin string, env []string) measured {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("/usr/bin/time", "-v", bin, "reconcile", "--json")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	require.NoError(t, cmd.Run(), stderr.String())
	m := measured{wall: time.Since(start).Round(time.Millisecond)}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &m.report), stdout.String())
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Maximum resident set size (kbytes): "); ok {
			m.maxRSSKiB, _ = strconv.Atoi(v)
		}
	}
	require.NotZero(t, m.maxRSSKiB, stderr.String())
	return m
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
