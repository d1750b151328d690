//go:build bench

// The sync rate, measured rather than asserted, with the CPU each service spent on it. Run it on its own:
//
//	go test -tags bench -run TestSyncRate -v ./sync/
//
// Settings to try, from the environment: BENCH_N (identities, default 10,000), BENCH_SYNC_WORKERS (identity
// queue MaxWorkers, default 200), BENCH_BATCHES (sync batches in flight, default 4), BENCH_FETCH_COOLDOWN
// (identity queue FetchCooldown, default River's).
package sync_test

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
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
	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	"github.com/kratos-hooks/kratos-hooks/search"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// TestSyncRate syncs n identities that each have a registration event and a sync job waiting, through the
// identity and index workers with serve's settings, until every document is searchable, and says how much
// CPU each service spent on it (the wall clock of a shared machine says little on its own).
func TestSyncRate(t *testing.T) {
	n := envInt("BENCH_N", 10000)
	workers := envInt("BENCH_SYNC_WORKERS", 200)
	batches := envInt("BENCH_BATCHES", 4)
	cooldown, _ := time.ParseDuration(os.Getenv("BENCH_FETCH_COOLDOWN"))
	ctx := testenv.Context(t)
	db := testenv.NewDB(t)
	es := testenv.Elasticsearch(t)
	kr := testenv.StartKratos(t, testenv.KratosOpts{})

	var params []river.InsertManyParams
	var hooks, flows, sums, idents []string
	for len(params) < n {
		batch := make([]kratos.CreateIdentityBody, min(kratos.BatchCreateLimit, n-len(params)))
		for i := range batch {
			traits, _ := json.Marshal(testenv.Traits(fmt.Sprintf("p%d.%s@bench.example.com", len(params)+i, testenv.Name("s")), "Person", "Number "+strconv.Itoa(len(params)+i)))
			batch[i] = kratos.CreateIdentityBody{SchemaID: "person", Traits: traits}
		}
		ids, err := kr.Admin.BatchCreateIdentities(ctx, batch)
		require.NoError(t, err)
		for _, id := range ids {
			key := profilesync.EventKey{Hook: profilesync.HookRegistrationAfter, FlowID: uuid.New()}
			sum := sha256.Sum256(key.FlowID[:])
			key.BodySHA256 = sum[:]
			hooks, flows, sums, idents = append(hooks, string(key.Hook)), append(flows, key.FlowID.String()), append(sums, fmt.Sprintf("%x", sum)), append(idents, id.String())
			params = append(params, river.InsertManyParams{Args: profilesync.IdentityArgs{IdentityID: id, Event: &key}})
		}
	}
	_, err := db.Pool.Exec(ctx, `
INSERT INTO hook_events (hook, flow_id, body_sha256, identity_id)
SELECT h, f::uuid, decode(s, 'hex'), i::uuid FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS e(h, f, s, i)`,
		hooks, flows, sums, idents)
	require.NoError(t, err)

	// serve's worker pool: SYNC_BATCHES + 16 connections.
	pc, err := pgxpool.ParseConfig(db.URL)
	require.NoError(t, err)
	pc.MaxConns = int32(batches + 16)
	pc.ConnConfig.RuntimeParams["application_name"] = "kratos-hooks-worker"
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	require.NoError(t, err)
	defer pool.Close()

	index, err := search.New(search.Config{Addresses: []string{es.URL}, Alias: es.Alias})
	require.NoError(t, err)
	_, err = index.Ensure(ctx)
	require.NoError(t, err)
	writer, err := index.NewWriter(search.WriterOpts{})
	require.NoError(t, err)
	mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)
	reg := river.NewWorkers()
	river.AddWorker(reg, profilesync.NewIdentityWorker(profilesync.IdentityWorkerOpts{
		Pool: pool, Kratos: kr.Admin, Mapper: mapper, Logger: logger, IndexProfiles: true, Batches: batches,
	}))
	river.AddWorker(reg, profilesync.NewIndexWorker(profilesync.IndexWorkerOpts{Pool: pool, Index: index, Writer: writer, Logger: logger}))
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger: logger, Workers: reg,
		Queues: map[string]river.QueueConfig{
			profilesync.QueueIdentity: {MaxWorkers: workers, FetchCooldown: cooldown},
			profilesync.QueueIndex:    {MaxWorkers: 1000},
		},
	})
	require.NoError(t, err)
	_, err = jobs.InsertMany(ctx, params)
	require.NoError(t, err)

	groups := []testenv.CPUGroup{
		{Name: "workers (this test)", Matches: testenv.Process(os.Getpid())},
		{Name: "kratos", Matches: testenv.Process(kr.PID())},
		{Name: "postgres", Tree: true, Matches: testenv.PostgresServer(testenv.Getenv(t, testenv.EnvDatabaseURL))},
		{Name: "elasticsearch", Matches: testenv.ElasticsearchNode(es.URL)},
	}
	before := testenv.SampleCPU(groups)
	start := time.Now()
	require.NoError(t, jobs.Start(ctx))
	var inPostgres time.Duration
	for {
		if inPostgres == 0 {
			var got int
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM profiles`).Scan(&got))
			if got >= n {
				inPostgres = time.Since(start)
			}
		}
		if inPostgres != 0 && docs(t, es) >= n {
			break
		}
		require.Less(t, time.Since(start), 10*time.Minute)
		time.Sleep(100 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := testenv.CPUReport(groups, before, testenv.SampleCPU(groups))
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, jobs.Stop(stopCtx))
	defer writer.Close(stopCtx)
	t.Logf("synced %d identities: in Postgres after %s, searchable after %s (%.0f/s), %d workers, fetch cooldown %s",
		n, inPostgres.Round(time.Millisecond), elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), workers, cmp.Or(cooldown, river.FetchCooldownDefault))
	t.Logf("CPU: %s", cpu)
}

// docs is how many documents the index holds now.
func docs(t *testing.T, es testenv.ElasticsearchIndex) int {
	n, err := testenv.CountDocs(testenv.Context(t), es.URL, es.Alias)
	require.NoError(t, err)
	return n
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}
