package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// stackOpts says which services a stack uses; empty fields get the shared ones.
type stackOpts struct {
	// DatabaseURL is kratos-hooks's database, which the stack migrates with `kratos-hooks migrate`. Empty: a
	// migrated database of the test's own on the shared server.
	DatabaseURL string
	// ElasticsearchURL is the cluster. Empty: the shared one. The alias is always the test's own.
	ElasticsearchURL string
	// Env is added to the environment of both processes (and of reconcile).
	Env map[string]string
}

// stack is one Kratos and kratos-hooks as two processes, the way it is deployed when HTTP and workers scale
// apart: an HTTP process that records events and a worker process that syncs them.
type stack struct {
	kratos *testenv.Kratos
	// admin is the test's client of Kratos's admin API. Its timeout is generous: creating 2,000 identities
	// in one call takes over 10 s (testenv's client's timeout) when two stacks share two busy cores.
	admin *kratos.Client
	// db is the test's own connection to kratos-hooks's database, to wait for the workers and read profiles.
	db     *pgxpool.Pool
	esURL  string
	alias  string
	env    map[string]string
	http   *testenv.Service
	worker *testenv.Service
}

// baseEnv is the configuration every fault test runs with.
var baseEnv = map[string]string{
	// Retry within a second of a dependency coming back; the default backoff grows to 15 minutes.
	"JOB_RETRY_BASE": "100ms",
	"JOB_RETRY_MAX":  "1s",
	// A job whose worker died is rescued in seconds, not the default 2 minutes (River's own: 1 hour). It
	// must exceed every job timeout, or running jobs get rescued.
	"SYNC_JOB_TIMEOUT":        "5s",
	"RESCUE_STUCK_JOBS_AFTER": "8s",
	"ELASTICSEARCH_TIMEOUT":   "3s",
	// The hook's database deadline is not what these tests are about: on two cores shared with other
	// suites, a commit to the shared Postgres can take a second. The Postgres test shows that a 503 for a
	// database that is down comes at once, long before this deadline.
	"HOOK_DB_TIMEOUT": "10s",
	// Two stacks run at once beside other packages' tests on the shared Postgres: keep the pools small.
	"HTTP_DB_MAX_CONNS": "8",
	"SYNC_WORKERS":      "16",
}

func startStack(t *testing.T, opts stackOpts) *stack {
	t.Helper()
	s := &stack{kratos: testenv.StartKratos(t, testenv.KratosOpts{})}
	var err error
	s.admin, err = kratos.NewClient(s.kratos.AdminURL, &http.Client{Timeout: 2 * time.Minute})
	require.NoError(t, err)

	dbURL := opts.DatabaseURL
	if dbURL == "" {
		dbURL = testenv.NewDB(t).URL
	}
	s.esURL = opts.ElasticsearchURL
	if s.esURL == "" {
		es := testenv.Elasticsearch(t)
		s.esURL, s.alias = es.URL, es.Alias
	} else {
		s.alias = testenv.Name("kh_chaos")
	}
	s.env = map[string]string{
		"DATABASE_URL":        dbURL,
		"KRATOS_ADMIN_URL":    s.kratos.AdminURL,
		"ELASTICSEARCH_URL":   s.esURL,
		"ELASTICSEARCH_INDEX": s.alias,
	}
	maps.Copy(s.env, baseEnv)
	maps.Copy(s.env, opts.Env)

	if opts.DatabaseURL != "" {
		_, stderr, err := testenv.RunBinary(t, s.env, "migrate")
		require.NoError(t, err, stderr)
	}
	pc, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	pc.MaxConns = 4
	s.db, err = pgxpool.NewWithConfig(context.Background(), pc)
	require.NoError(t, err)
	t.Cleanup(s.db.Close)

	// The worker first: it creates the index alias.
	s.worker = testenv.StartService(t, testenv.ServiceOpts{Args: []string{"serve", "--role", "worker"}, Env: s.env})
	s.http = testenv.StartService(t, testenv.ServiceOpts{Args: []string{"serve", "--role", "http"}, Env: s.env})
	return s
}

// person is an identity the test created in Kratos, with the traits it was created with.
type person struct {
	ID     uuid.UUID
	Traits map[string]any
}

// createPeople creates n identities through Kratos's admin batch API, without credentials (Kratos hashes
// passwords with bcrypt, which would take minutes). No webhook fires for them: the test sends the events.
func (s *stack) createPeople(t *testing.T, n int, prefix string) []person {
	t.Helper()
	prefix = testenv.Name(prefix)
	people := make([]person, 0, n)
	for start := 0; start < n; start += kratos.BatchCreateLimit {
		end := min(start+kratos.BatchCreateLimit, n)
		bodies := make([]kratos.CreateIdentityBody, 0, end-start)
		batch := make([]person, 0, end-start)
		for i := start; i < end; i++ {
			traits := testenv.Traits(fmt.Sprintf("%s-%d@chaos.example.com", prefix, i), "Chaos", fmt.Sprintf("Person %d", i))
			raw, err := json.Marshal(traits)
			require.NoError(t, err)
			bodies = append(bodies, kratos.CreateIdentityBody{SchemaID: "person", Traits: raw})
			batch = append(batch, person{Traits: traits})
		}
		ids, err := s.admin.BatchCreateIdentities(testenv.Context(t), bodies)
		require.NoError(t, err)
		for i := range batch {
			batch[i].ID = ids[i]
		}
		people = append(people, batch...)
	}
	return people
}

// rename changes the names of people in Kratos through the admin API (no webhook fires for that), a few at
// a time, and returns them as they are now.
func (s *stack) rename(t *testing.T, people []person, last string) []person {
	t.Helper()
	out := make([]person, len(people))
	errs := make([]error, len(people))
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range work {
				p := people[i]
				traits := testenv.Traits(p.Traits["email"].(string), "Renamed", last)
				raw, err := json.Marshal(traits)
				if err == nil {
					_, err = s.admin.UpdateIdentity(context.Background(), p.ID, kratos.UpdateIdentityBody{SchemaID: "person", Traits: raw, State: "active"})
				}
				out[i], errs[i] = person{ID: p.ID, Traits: traits}, err
			}
		})
	}
	for i := range people {
		work <- i
	}
	close(work)
	wg.Wait()
	require.NoError(t, errors.Join(errs...), "rename in Kratos")
	return out
}

// jobCounts counts the sync and index jobs by whether they are still to run.
type jobCounts struct {
	Pending  int // available, scheduled, retryable or running
	Done     int // completed
	Failed   int // cancelled or discarded: given up
	Rescued  int // rescued after their worker died (River records "Stuck job rescued by JobRescuer")
	Retried  int // needed more than one attempt
	SyncJobs int
}

func (s *stack) jobs(ctx context.Context) (jobCounts, error) {
	var c jobCounts
	err := s.db.QueryRow(ctx, `
SELECT count(*) FILTER (WHERE state IN ('available', 'scheduled', 'retryable', 'running', 'pending')),
       count(*) FILTER (WHERE state = 'completed'),
       count(*) FILTER (WHERE state IN ('cancelled', 'discarded')),
       count(*) FILTER (WHERE errors::text LIKE '%Stuck job rescued%'),
       count(*) FILTER (WHERE attempt > 1),
       count(*) FILTER (WHERE kind = 'sync_identity')
FROM river_job WHERE kind IN ('sync_identity', 'index_profile')`).Scan(&c.Pending, &c.Done, &c.Failed, &c.Rescued, &c.Retried, &c.SyncJobs)
	return c, err
}

// waitSettled waits until at least syncJobs sync jobs exist and no sync or index job is left to run, and
// returns the job counts then. Only the wait reads River's table; what arrived is counted by the census.
func (s *stack) waitSettled(t *testing.T, syncJobs int, timeout time.Duration) jobCounts {
	t.Helper()
	var c jobCounts
	testenv.Poll(t, timeout, func() error {
		var err error
		if c, err = s.jobs(context.Background()); err != nil {
			return err
		}
		if c.SyncJobs < syncJobs || c.Pending > 0 {
			return fmt.Errorf("%d of %d sync jobs so far, %d jobs still to run", c.SyncJobs, syncJobs, c.Pending)
		}
		return nil
	})
	return c
}

// countProfiles counts the live profile rows (an observable sign of progress while a fault lasts).
func (s *stack) countProfiles(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRow(ctx, `SELECT count(*) FROM profiles WHERE deleted_at IS NULL`).Scan(&n)
	return n, err
}
