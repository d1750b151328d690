package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// adminToken is the ADMIN_API_TOKEN of the search stacks.
const adminToken = "test-admin-token-0123456789"

// searchStack is a real Kratos wired to kratos-hooks (run in-process) with its own database and an index
// alias of its own on esURL (the shared cluster, a proxy in front of it, or a private one).
type searchStack struct {
	db     *testenv.DB
	kratos *testenv.Kratos
	svc    *service
	esURL  string // where the test reads documents: the cluster itself, never the proxy
	alias  string
}

func startSearchStack(t *testing.T, esURL, serviceESURL, alias string, env map[string]string) *searchStack {
	t.Helper()
	s := &searchStack{db: testenv.NewDB(t), esURL: esURL, alias: alias}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	s.kratos = testenv.StartKratos(t, testenv.KratosOpts{HooksURL: "http://" + addr})
	full := map[string]string{
		"LISTEN_ADDR":         addr,
		"DATABASE_URL":        s.db.URL,
		"KRATOS_ADMIN_URL":    s.kratos.AdminURL,
		"ELASTICSEARCH_URL":   serviceESURL,
		"ELASTICSEARCH_INDEX": alias,
		"ADMIN_API_TOKEN":     adminToken,
		// debug would log every document; the tests read state, not logs.
		"LOG_LEVEL": "info",
	}
	for k, v := range env {
		full[k] = v
	}
	s.svc = startService(t, full)
	return s
}

func (s *searchStack) doc(t *testing.T, id uuid.UUID) testenv.ESDoc {
	t.Helper()
	d, err := testenv.GetDoc(s.esURL, s.alias, id.String())
	require.NoError(t, err)
	return d
}

func (s *searchStack) revision(t *testing.T, id uuid.UUID) (rev int64) {
	t.Helper()
	require.NoError(t, s.db.Pool.QueryRow(context.Background(), `SELECT revision FROM profiles WHERE identity_id = $1`, id).Scan(&rev))
	return rev
}

// enqueueSync inserts a sync job for id, as a later event or a reconcile pass would.
func (s *searchStack) enqueueSync(t *testing.T, id uuid.UUID) {
	t.Helper()
	jobs, err := river.NewClient(riverpgxv5.New(s.db.Pool), &river.Config{})
	require.NoError(t, err)
	_, err = jobs.Insert(testenv.Context(t), profilesync.IdentityArgs{IdentityID: id}, nil)
	require.NoError(t, err)
}

// search calls GET /admin/profiles with the token (none when empty) and returns the status and body.
func (s *searchStack) search(t *testing.T, token, query string) (int, searchBody) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.svc.URL+"/admin/profiles?"+query, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body searchBody
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.Unmarshal(raw, &body), string(raw))
		require.NotNil(t, body.Profiles, "profiles must be a list, never null: %s", raw)
	}
	return resp.StatusCode, body
}

type searchBody struct {
	Profiles []struct {
		IdentityID string  `json:"identity_id"`
		Email      *string `json:"email"`
		Phone      *string `json:"phone"`
		Name       *string `json:"name"`
		Score      float64 `json:"score"`
	} `json:"profiles"`
	Total int64 `json:"total"`
}

func TestEndToEnd_TheSearchIndexFollowsKratos(t *testing.T) {
	es := testenv.Elasticsearch(t)
	s := startSearchStack(t, es.URL, es.URL, es.Alias, nil)
	email := testenv.Email("ines")

	// Registration through Kratos: the document appears with the profile's fields at its revision.
	reg := s.kratos.MustRegister(t, testenv.Traits(email, "Ines", "Indexed"), testenv.Password)
	id := reg.IdentityID
	var d testenv.ESDoc
	testenv.Poll(t, 30*time.Second, func() error {
		if d = s.doc(t, id); !d.Found {
			return fmt.Errorf("no document for %s yet", id)
		}
		return nil
	})
	require.Equal(t, s.revision(t, id), d.Version)
	require.Equal(t, id.String(), d.Source["identity_id"])
	require.Equal(t, email, d.Source["email"])
	require.Equal(t, "Ines Indexed", d.Source["name"])
	require.Equal(t, "person", d.Source["schema_id"])
	require.Equal(t, "active", d.Source["state"])
	require.Equal(t, false, d.Source["email_verified"])
	require.Equal(t, map[string]any{"email": email, "name": map[string]any{"first": "Ines", "last": "Indexed"}}, d.Source["traits"])
	require.NotEmpty(t, d.Source["created_at"])
	require.Nil(t, d.Source["last_login_at"])

	// /admin/profiles finds her by e-mail address and by name (once the index has refreshed).
	var body searchBody
	testenv.Poll(t, 10*time.Second, func() error {
		var status int
		if status, body = s.search(t, adminToken, "q="+email); status != http.StatusOK || len(body.Profiles) == 0 {
			return fmt.Errorf("search by e-mail: %d %+v", status, body)
		}
		return nil
	})
	require.Equal(t, id.String(), body.Profiles[0].IdentityID)
	require.Equal(t, email, *body.Profiles[0].Email)
	require.Equal(t, "Ines Indexed", *body.Profiles[0].Name)
	require.Positive(t, body.Profiles[0].Score)
	require.EqualValues(t, 1, body.Total)
	status, body := s.search(t, adminToken, "q=ines+indexed&limit=5")
	require.Equal(t, http.StatusOK, status)
	require.Len(t, body.Profiles, 1)
	require.Equal(t, id.String(), body.Profiles[0].IdentityID)
	status, body = s.search(t, adminToken, "q=nobody-at-all%40nowhere.example")
	require.Equal(t, http.StatusOK, status)
	require.Empty(t, body.Profiles)
	require.Zero(t, body.Total)

	// The admin API refuses a missing or wrong token, and says what is wrong with bad input.
	status, _ = s.search(t, "", "q="+email)
	require.Equal(t, http.StatusUnauthorized, status)
	status, _ = s.search(t, testenv.APIKey, "q="+email)
	require.Equal(t, http.StatusUnauthorized, status, "Kratos's hook key is not an admin token")
	for _, q := range []string{"", "q=", "q=x&limit=0", "q=x&limit=101", "q=x&limit=ten", "q=" + strings.Repeat("a", 300)} {
		status, _ = s.search(t, adminToken, q)
		require.Equal(t, http.StatusBadRequest, status, q)
	}

	// A settings update changes the document, at the new revision.
	res := s.kratos.UpdateProfile(t, reg.SessionToken, testenv.Traits(email, "Ines", "Updated"))
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	testenv.Poll(t, 30*time.Second, func() error {
		if d = s.doc(t, id); d.Source["name"] != "Ines Updated" {
			return fmt.Errorf("name is %v", d.Source["name"])
		}
		return nil
	})
	require.Equal(t, s.revision(t, id), d.Version)
	require.Greater(t, d.Version, int64(1))

	// Readiness reports the cluster.
	_, checks := testenv.Readiness(t, s.svc.URL)
	require.Equal(t, "ok", checks["elasticsearch"])

	// Deleted in Kratos (no webhook fires for that) and then synced: the document is gone.
	require.NoError(t, s.kratos.Admin.DeleteIdentity(testenv.Context(t), id))
	s.enqueueSync(t, id)
	testenv.Poll(t, 30*time.Second, func() error {
		if d = s.doc(t, id); d.Found {
			return fmt.Errorf("document still there at version %d", d.Version)
		}
		return nil
	})
}

// createIdentities creates n identities through the Kratos admin API (no credentials: no bcrypt) and returns
// their ids. No webhook fires for them.
func createIdentities(t *testing.T, k *testenv.Kratos, n int, prefix string) []uuid.UUID {
	t.Helper()
	bodies := make([]kratos.CreateIdentityBody, n)
	for i := range bodies {
		traits, _ := json.Marshal(testenv.Traits(fmt.Sprintf("%s-%d@bulk.example.com", prefix, i), "Bulk", fmt.Sprintf("Person %d", i)))
		bodies[i] = kratos.CreateIdentityBody{SchemaID: "person", Traits: traits}
	}
	ids, err := k.Admin.BatchCreateIdentities(testenv.Context(t), bodies)
	require.NoError(t, err)
	return ids
}

// sendRegistrationEvents posts a registration/after webhook for each id, as Kratos would, a few at a time,
// and fails the test on any answer but 200.
func sendRegistrationEvents(t *testing.T, serviceURL string, ids []uuid.UUID) {
	t.Helper()
	work := make(chan uuid.UUID)
	errs := make(chan error, len(ids))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for id := range work {
				body, _ := json.Marshal(map[string]any{
					"flow":     map[string]any{"id": uuid.New(), "type": "api", "active": "password"},
					"identity": map[string]any{"id": id, "schema_id": "person", "state": "active"},
					"request":  map[string]any{},
				})
				req, _ := http.NewRequest(http.MethodPost, serviceURL+"/hooks/registration/after", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+testenv.APIKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("event for %s: %d", id, resp.StatusCode)
				}
			}
		})
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// indexJobStates counts the index jobs by state.
func indexJobStates(t *testing.T, db *testenv.DB) map[string]int {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT state::text, count(*) FROM river_job WHERE kind = 'index_profile' GROUP BY state`)
	require.NoError(t, err)
	states := map[string]int{}
	for rows.Next() {
		var state string
		var n int
		require.NoError(t, rows.Scan(&state, &n))
		states[state] = n
	}
	require.NoError(t, rows.Err())
	return states
}

// requireDocumentsAtTheirRevisions checks that every profile has its document, at its revision.
func (s *searchStack) requireDocumentsAtTheirRevisions(t *testing.T, ids []uuid.UUID) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"ids": ids})
	resp, err := http.Post(s.esURL+"/"+s.alias+"/_mget?_source=false", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var got struct {
		Docs []struct {
			ID      string `json:"_id"`
			Found   bool   `json:"found"`
			Version int64  `json:"_version"`
		} `json:"docs"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	require.Len(t, got.Docs, len(ids))
	revisions := map[string]int64{}
	rows, err := s.db.Pool.Query(context.Background(), `SELECT identity_id::text, revision FROM profiles`)
	require.NoError(t, err)
	for rows.Next() {
		var id string
		var rev int64
		require.NoError(t, rows.Scan(&id, &rev))
		revisions[id] = rev
	}
	require.NoError(t, rows.Err())
	for _, d := range got.Docs {
		require.True(t, d.Found, "document %s missing", d.ID)
		require.Equal(t, revisions[d.ID], d.Version, "document %s", d.ID)
	}
}

func TestEndToEnd_ManyEventsShareFewBulkRequests(t *testing.T) {
	es := testenv.Elasticsearch(t)
	// Counted outside the code under test: a proxy between the service and the cluster.
	proxy := testenv.NewCountingProxy(t, es.URL)
	s := startSearchStack(t, es.URL, proxy.URL, es.Alias, nil)
	const n = 2000
	ids := createIdentities(t, s.kratos, n, "bulk")

	start := time.Now()
	before := proxy.Bulks()
	sendRegistrationEvents(t, s.svc.URL, ids)
	testenv.Poll(t, 120*time.Second, func() error {
		if got := indexJobStates(t, s.db); got["completed"] < n {
			return fmt.Errorf("index jobs: %v", got)
		}
		return nil
	})
	elapsed := time.Since(start)
	bulks := proxy.Bulks() - before
	t.Logf("%d events indexed in %s with %d _bulk requests", n, elapsed.Round(time.Millisecond), bulks)
	s.requireDocumentsAtTheirRevisions(t, ids)
	require.LessOrEqual(t, bulks, int64(40), "_bulk requests for %d events", n)

	// The service's own account agrees with the proxy's, and every event got its lag measured at both stages.
	m := testenv.MustScrape(t, s.svc.URL+"/metrics")
	require.EqualValues(t, proxy.Bulks(), m.Get("kratos_hooks_search_bulk_request_items_count"))
	require.EqualValues(t, proxy.Bulks(), m.Get("kratos_hooks_search_bulk_requests_total", "outcome", "ok"))
	require.GreaterOrEqual(t, m.Get("kratos_hooks_search_bulk_request_items_sum"), float64(n))
	require.Zero(t, m.Get("kratos_hooks_search_bulk_item_failures_total"))
	require.GreaterOrEqual(t, m.Get("kratos_hooks_sync_lag_seconds_count", "stage", "profile"), float64(n))
	require.GreaterOrEqual(t, m.Get("kratos_hooks_sync_lag_seconds_count", "stage", "document"), float64(n))
}

func TestEndToEnd_AnElasticsearchOutageDelaysIndexingAndLosesNothing(t *testing.T) {
	// A cluster of this test's own: stopping the shared one would fail every other test.
	es := testenv.StartElasticsearch(t)
	alias := testenv.Name("kh_test")
	s := startSearchStack(t, es.URL, es.URL, alias, map[string]string{
		// Come back within a second of the cluster: the default backoff would wait minutes.
		"JOB_RETRY_BASE":        "100ms",
		"JOB_RETRY_MAX":         "1s",
		"ELASTICSEARCH_TIMEOUT": "5s",
	})
	const n = 200
	ids := createIdentities(t, s.kratos, n, "outage")

	es.Stop(t)
	sendRegistrationEvents(t, s.svc.URL, ids)
	// Every event is synced to Postgres, and indexing fails while the cluster is down.
	testenv.Poll(t, 60*time.Second, func() error {
		var profiles, failing int
		ctx := context.Background()
		if err := s.db.Pool.QueryRow(ctx, `SELECT count(*) FROM profiles`).Scan(&profiles); err != nil {
			return err
		}
		if err := s.db.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'index_profile' AND errors IS NOT NULL`).Scan(&failing); err != nil {
			return err
		}
		if profiles < n || failing < n {
			return fmt.Errorf("%d profiles, %d index jobs failed so far", profiles, failing)
		}
		return nil
	})
	// Readiness stays green: an index outage must not pull the receiver out of the load balancer.
	status, checks := testenv.Readiness(t, s.svc.URL)
	require.Equal(t, http.StatusOK, status)
	require.NotEqual(t, "ok", checks["elasticsearch"])
	// /metrics says what is wrong.
	m := testenv.MustScrape(t, s.svc.URL+"/metrics")
	down, ok := m.Value("kratos_hooks_dependency_up", "dependency", "elasticsearch")
	require.True(t, ok)
	require.Zero(t, down)
	require.Equal(t, 1.0, m.Get("kratos_hooks_dependency_up", "dependency", "database"))
	require.Positive(t, m.Get("kratos_hooks_search_bulk_requests_total", "outcome", "failed"))
	require.GreaterOrEqual(t, m.Get("kratos_hooks_jobs_total", "kind", "index_profile", "outcome", "errored"), float64(n))

	es.Start(t)
	testenv.Poll(t, 60*time.Second, func() error {
		if got := indexJobStates(t, s.db); got["completed"] != n || len(got) != 1 {
			return fmt.Errorf("index jobs: %v", got)
		}
		return nil
	})
	s.requireDocumentsAtTheirRevisions(t, ids)
	var retried int
	require.NoError(t, s.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM river_job WHERE kind = 'index_profile' AND attempt > 1`).Scan(&retried))
	require.Equal(t, n, retried, "every index job should have failed during the outage and then succeeded")
	m = testenv.MustScrape(t, s.svc.URL+"/metrics")
	require.Equal(t, 1.0, m.Get("kratos_hooks_dependency_up", "dependency", "elasticsearch"))
	require.Equal(t, float64(n), m.Get("kratos_hooks_jobs_total", "kind", "index_profile", "outcome", "completed"))
}

func TestReindex_RebuildsTheIndexFromPostgresAndMovesTheAlias(t *testing.T) {
	t.Parallel()
	es := testenv.Elasticsearch(t)
	db := testenv.NewDB(t)
	ctx := testenv.Context(t)
	env := map[string]string{"DATABASE_URL": db.URL, "ELASTICSEARCH_URL": es.URL, "ELASTICSEARCH_INDEX": es.Alias, "LOG_LEVEL": "warn"}

	out, stderr, err := runCLI(t, env, "migrate")
	require.NoError(t, err, stderr)
	require.Contains(t, out, fmt.Sprintf("created search index %s-v1 behind alias %s", es.Alias, es.Alias))
	out, stderr, err = runCLI(t, env, "migrate")
	require.NoError(t, err, stderr)
	require.Contains(t, out, fmt.Sprintf("search index %s-v1 is up to date", es.Alias))

	// Profiles that never reached the index (written while the projection was off), and a tombstone.
	var live []uuid.UUID
	for i := range 25 {
		id := uuid.New()
		name := fmt.Sprintf("Reindexed %d", i)
		_, err := profilesync.UpsertProfile(ctx, db.Pool, profilesync.Profile{
			IdentityID: id, SchemaID: "person", State: "active", Traits: json.RawMessage(`{}`), Name: &name,
			VerifiableAddresses: []kratos.VerifiableAddress{}, RecoveryAddresses: []kratos.RecoveryAddress{}, Attributes: map[string]any{},
		})
		require.NoError(t, err)
		live = append(live, id)
	}
	gone := live[0]
	_, err = profilesync.TombstoneProfile(ctx, db.Pool, gone)
	require.NoError(t, err)
	live = live[1:]

	out, stderr, err = runCLI(t, env, "reindex", "--delete-old")
	require.NoError(t, err, stderr)
	require.Contains(t, out, fmt.Sprintf("indexed 24 profiles into %s-v2; alias %s now points at it (before: %s-v1)", es.Alias, es.Alias, es.Alias))
	require.Contains(t, out, fmt.Sprintf("deleted %s-v1", es.Alias))

	s := &searchStack{db: db, esURL: es.URL, alias: es.Alias}
	s.requireDocumentsAtTheirRevisions(t, live)
	d, err := testenv.GetDoc(es.URL, es.Alias, gone.String())
	require.NoError(t, err)
	require.False(t, d.Found)
	resp, err := http.Get(es.URL + "/_alias/" + es.Alias)
	require.NoError(t, err)
	var aliases map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&aliases))
	resp.Body.Close()
	require.Equal(t, []string{es.Alias + "-v2"}, keys(aliases))
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestServe_ElasticsearchConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	base := map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1:1/x", "KRATOS_ADMIN_URL": "http://127.0.0.1:1", "HOOKS_API_KEY": testenv.APIKey}
	for env, want := range map[string]string{
		"ELASTICSEARCH_URL=http://127.0.0.1:9200;ELASTICSEARCH_INDEX=Profiles":                                      "ELASTICSEARCH_INDEX",
		"ELASTICSEARCH_URL=127.0.0.1:9200":                                                                          "ELASTICSEARCH_URL: address 1 of 1",
		"ELASTICSEARCH_URL=http://127.0.0.1:9200;ELASTICSEARCH_USERNAME=elastic":                                    "ELASTICSEARCH_PASSWORD go together",
		"ELASTICSEARCH_URL=http://a:9200;ELASTICSEARCH_API_KEY=k;ELASTICSEARCH_USERNAME=u;ELASTICSEARCH_PASSWORD=p": "use one",
		"ADMIN_API_TOKEN=short": "ADMIN_API_TOKEN: token 1 of 1 is shorter than 16 characters",
		"INDEX_WORKERS=0":       "INDEX_WORKERS must be 1..10000",
	} {
		full := map[string]string{}
		for k, v := range base {
			full[k] = v
		}
		for _, kv := range strings.Split(env, ";") {
			k, v, _ := strings.Cut(kv, "=")
			full[k] = v
		}
		_, stderr, err := runCLI(t, full, "serve")
		require.Error(t, err, env)
		require.Contains(t, stderr, want, env)
	}
}
