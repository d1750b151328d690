//go:build bench

// The indexing rate, measured rather than asserted (a timed assertion fails on a busy CI machine). Run it
// on its own, with the services `make test` starts:
//
//	go test -tags bench -run TestIndexRate -v ./sync/
//
// To try other settings: BENCH_WORKERS (index queue MaxWorkers, default 1000), BENCH_FLUSH (flush interval,
// default 1s), BENCH_BYTES (flush size, default 256 KiB), BENCH_REQUESTS (bulk requests in flight, default 1).
package sync_test

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/search"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// TestIndexRate indexes 10,000 profiles through the index worker with serve's defaults (1,000 index
// workers, one shared writer flushing at 512 KiB or 1 s) and reports documents per second and the number
// of _bulk requests, counted by a proxy in front of the cluster.
func TestIndexRate(t *testing.T) {
	const n = 10000
	ctx := testenv.Context(t)
	db := testenv.NewDB(t)
	es := testenv.Elasticsearch(t)
	proxy := testenv.NewCountingProxy(t, es.URL)

	// Profiles shaped like the default mapping's: e-mail, name, traits, an attribute.
	_, err := db.Pool.Exec(ctx, `
INSERT INTO profiles (identity_id, schema_id, state, traits, email, name, attributes, created_at, revision)
SELECT gen_random_uuid(), 'person', 'active',
       jsonb_build_object('email', 'person' || i || '@bench.example', 'name', jsonb_build_object('first', 'Person', 'last', 'Number ' || i)),
       'person' || i || '@bench.example', 'Person Number ' || i, '{"department":"sales"}', now(), 1
FROM generate_series(1, $1) AS i`, n)
	require.NoError(t, err)
	rows, err := db.Pool.Query(ctx, `SELECT identity_id FROM profiles`)
	require.NoError(t, err)
	var params []river.InsertManyParams
	for rows.Next() {
		var id uuid.UUID
		require.NoError(t, rows.Scan(&id))
		params = append(params, river.InsertManyParams{Args: profilesync.IndexArgs{IdentityID: id}})
	}
	require.NoError(t, rows.Err())

	// A worker pool of 48 connections, more than serve's (SYNC_BATCHES + 16), which the index workers do not
	// need: they hold a connection only to read their row (the test database's pool has 8).
	pc, err := pgxpool.ParseConfig(db.URL)
	require.NoError(t, err)
	pc.MaxConns = 48
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	require.NoError(t, err)
	defer pool.Close()

	index, err := search.New(search.Config{Addresses: []string{proxy.URL}, Alias: es.Alias})
	require.NoError(t, err)
	_, err = index.Ensure(ctx)
	require.NoError(t, err)
	writer, err := index.NewWriter(search.WriterOpts{FlushInterval: benchFlush, FlushBytes: benchBytes, Requests: benchRequests})
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)
	workers := river.NewWorkers()
	river.AddWorker(workers, profilesync.NewIndexWorker(profilesync.IndexWorkerOpts{Pool: pool, Index: index, Writer: writer, Logger: logger}))
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger: logger, Workers: workers, Queues: map[string]river.QueueConfig{profilesync.QueueIndex: {MaxWorkers: cmp.Or(benchWorkers, 1000)}},
	})
	require.NoError(t, err)
	_, err = jobs.InsertMany(ctx, params)
	require.NoError(t, err)

	before := proxy.Bulks()
	start := time.Now()
	require.NoError(t, jobs.Start(ctx))
	testenv.Poll(t, 5*time.Minute, func() error {
		var done int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE state = 'completed'`).Scan(&done); err != nil {
			return err
		}
		if done < n {
			return fmt.Errorf("%d of %d completed", done, n)
		}
		return nil
	})
	elapsed := time.Since(start)
	bulks := proxy.Bulks() - before
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, jobs.Stop(stopCtx))
	defer writer.Close(stopCtx)

	require.NoError(t, index.Refresh(ctx, ""))
	require.Equal(t, n, docs(t, es))
	t.Logf("indexed %d profiles in %s: %.0f documents/s, %d _bulk requests (%.0f documents each, %s inside them)",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), bulks, float64(n)/float64(bulks), writer.Stats().Busy)
}

// Settings to try, from the environment; zero means serve's default.
var (
	benchWorkers, _  = strconv.Atoi(os.Getenv("BENCH_WORKERS"))
	benchFlush, _    = time.ParseDuration(os.Getenv("BENCH_FLUSH"))
	benchBytes, _    = strconv.Atoi(os.Getenv("BENCH_BYTES"))
	benchRequests, _ = strconv.Atoi(os.Getenv("BENCH_REQUESTS"))
)
