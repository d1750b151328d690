package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	// EnvElasticsearchHome is the unpacked Elasticsearch distribution that tests needing an Elasticsearch of
	// their own (to stop it) start. scripts/test.sh sets it; without it the cache folder scripts/lib.sh fills
	// is used.
	EnvElasticsearchHome = "TEST_ELASTICSEARCH_HOME"
	// EnvElasticsearchJavaHome is the JDK (17+) to run it with; without it one is looked for in /usr/lib/jvm.
	EnvElasticsearchJavaHome = "TEST_ELASTICSEARCH_JAVA_HOME"
)

// ElasticsearchIndex is the shared test cluster and an index name of this test's own.
type ElasticsearchIndex struct {
	URL string
	// Alias is unique to this test: use it as ELASTICSEARCH_INDEX. Every index whose name starts with it
	// is deleted when the test ends.
	Alias string
}

// Elasticsearch returns the shared test cluster (TEST_ELASTICSEARCH_URL) with an alias name for this test.
func Elasticsearch(t testing.TB) ElasticsearchIndex {
	t.Helper()
	es := ElasticsearchIndex{URL: strings.TrimRight(Getenv(t, EnvElasticsearchURL), "/"), Alias: Name("kh_test")}
	t.Cleanup(func() { deleteIndices(t, es.URL, es.Alias) })
	return es
}

// deleteIndices deletes every index named prefix*. It names them one by one: a cluster may refuse wildcard
// deletes (action.destructive_requires_name).
func deleteIndices(t testing.TB, base, prefix string) {
	resp, err := http.Get(base + "/_cat/indices/" + prefix + "*?format=json&h=index&expand_wildcards=all")
	if err != nil {
		t.Logf("list test indices %s*: %v", prefix, err)
		return
	}
	defer resp.Body.Close()
	var rows []struct {
		Index string `json:"index"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rows); err != nil || len(rows) == 0 {
		return
	}
	names := make([]string, len(rows))
	for i, r := range rows {
		names[i] = r.Index
	}
	req, _ := http.NewRequest(http.MethodDelete, base+"/"+strings.Join(names, ","), nil)
	if del, err := http.DefaultClient.Do(req); err != nil {
		t.Logf("delete test indices %v: %v", names, err)
	} else {
		del.Body.Close()
	}
}

// ESDoc is a document as GET /<index>/_doc/<id> returns it.
type ESDoc struct {
	Found   bool           `json:"found"`
	Version int64          `json:"_version"`
	Source  map[string]any `json:"_source"`
}

// GetDoc reads one document (through an alias or an index) straight from Elasticsearch, bypassing the code
// under test. A missing document is Found=false; any other failure is returned.
func GetDoc(base, index, id string) (ESDoc, error) {
	resp, err := http.Get(base + "/" + index + "/_doc/" + url.PathEscape(id))
	if err != nil {
		return ESDoc{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		return ESDoc{}, fmt.Errorf("GET %s/_doc/%s: %d %s", index, id, resp.StatusCode, body)
	}
	var d ESDoc
	if err := json.Unmarshal(body, &d); err != nil {
		return ESDoc{}, fmt.Errorf("GET %s/_doc/%s: %w", index, id, err)
	}
	return d, nil
}

// CountDocs is how many documents a search on index (an alias or an index) finds now, read straight from
// Elasticsearch.
func CountDocs(ctx context.Context, base, index string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+index+"/_count", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("_count on %s: %d", index, resp.StatusCode)
	}
	var c struct {
		Count int `json:"count"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return 0, fmt.Errorf("_count on %s: %w", index, err)
	}
	return c.Count, nil
}

// CountingProxy forwards everything to an Elasticsearch and counts the requests by path, so that a test can
// see how the code under test talks to the cluster without trusting the code's own numbers.
type CountingProxy struct {
	URL   string
	bulks atomic.Int64
	total atomic.Int64
}

// NewCountingProxy starts a proxy in front of target until the test ends.
func NewCountingProxy(t testing.TB, target string) *CountingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("proxy target %q: %v", target, err)
	}
	p := &CountingProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.total.Add(1)
		if strings.HasSuffix(r.URL.Path, "/_bulk") {
			p.bulks.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Bulks is the number of _bulk requests so far.
func (p *CountingProxy) Bulks() int64 { return p.bulks.Load() }

// Requests is the number of requests of any kind so far.
func (p *CountingProxy) Requests() int64 { return p.total.Load() }

// ElasticsearchProcess is an Elasticsearch of one test's own, which it may stop and start again (an outage)
// without disturbing the shared cluster other tests use.
type ElasticsearchProcess struct {
	URL string

	home, javaHome, dir string
	cred                *syscall.Credential
	pid                 int
}

// StartElasticsearch starts a single-node Elasticsearch from the distribution scripts/lib.sh unpacks, on a
// free port on 127.0.0.1 with its own data folder, and stops it when the test ends. It takes 10–30 s on two
// cores: use it only where the shared cluster will not do.
func StartElasticsearch(t testing.TB) *ElasticsearchProcess {
	t.Helper()
	p := &ElasticsearchProcess{home: elasticsearchHome(t), javaHome: javaHome(t)}
	var err error
	// Not t.TempDir: its parents are private to root, and Elasticsearch refuses to run as root.
	if p.dir, err = os.MkdirTemp("", "kh-es-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			p.dumpLog(t)
		}
		_ = os.RemoveAll(p.dir)
	})
	port, tport := FreePort(t), FreePort(t)
	p.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := copyDir(filepath.Join(p.home, "config"), filepath.Join(p.dir, "config")); err != nil {
		t.Fatalf("copy elasticsearch config: %v", err)
	}
	conf := fmt.Sprintf(`cluster.name: kratos-hooks-test
node.name: test-1
discovery.type: single-node
network.host: 127.0.0.1
http.port: %d
transport.port: %d
path.data: %s
path.logs: %s
xpack.security.enabled: false
cluster.routing.allocation.disk.threshold_enabled: false
`, port, tport, filepath.Join(p.dir, "data"), filepath.Join(p.dir, "logs"))
	if err := os.WriteFile(filepath.Join(p.dir, "config", "elasticsearch.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"data", "logs"} {
		if err := os.MkdirAll(filepath.Join(p.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() == 0 {
		p.cred = serviceUser(t)
		if err := chownTree(p.dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			t.Fatalf("hand %s to the service user: %v", p.dir, err)
		}
	}
	p.Start(t)
	return p
}

// Start starts it (again, after Stop: same port, same data) and waits until the cluster is at least yellow.
func (p *ElasticsearchProcess) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(filepath.Join(p.home, "bin", "elasticsearch"), "-d", "-p", filepath.Join(p.dir, "es.pid"))
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(),
		"ES_PATH_CONF="+filepath.Join(p.dir, "config"),
		"ES_JAVA_HOME="+p.javaHome,
		// C1 only: a test node lives for a minute and indexes a few thousand documents, so the optimising
		// compiler's work never pays back, and it doubles the start-up time on two busy cores (measured
		// 14 s and 8 s instead of 33 s and 22 s to the first start, 9 s and 6 s instead of 19 s and 24 s
		// to a restart).
		"ES_JAVA_OPTS=-Xms256m -Xmx256m -XX:TieredStopAtLevel=1",
	)
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	// With -d the launcher returns once the node has started (or failed to), leaving it in the background.
	if out, err := cmd.CombinedOutput(); err != nil {
		p.dumpLog(t)
		t.Fatalf("start elasticsearch: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(p.dir, "es.pid"))
	if err != nil {
		t.Fatalf("elasticsearch pid file: %v", err)
	}
	if p.pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		t.Fatalf("elasticsearch pid file: %q", b)
	}
	Poll(t, 120*time.Second, func() error {
		resp, err := http.Get(p.URL + "/_cluster/health?wait_for_status=yellow&timeout=1s")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("cluster health: %d", resp.StatusCode)
		}
		return nil
	})
}

// Stop stops it and waits until the process is gone.
func (p *ElasticsearchProcess) Stop(t testing.TB) {
	t.Helper()
	if p.pid == 0 {
		return
	}
	pid := p.pid
	p.pid = 0
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for processRunning(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(10 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processRunning reports whether pid is alive. The daemonised node is not our child, so it cannot be
// waited for; a zombie (exited, not yet reaped by its new parent) counts as gone.
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses, which may itself contain spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func (p *ElasticsearchProcess) dumpLog(t testing.TB) {
	b, _ := os.ReadFile(filepath.Join(p.dir, "logs", "kratos-hooks-test.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("last lines of the elasticsearch log:\n%s", strings.Join(lines, "\n"))
}

func elasticsearchHome(t testing.TB) string {
	t.Helper()
	if h := os.Getenv(EnvElasticsearchHome); h != "" {
		return h
	}
	cache := os.Getenv("KRATOS_HOOKS_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "kratos-hooks")
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "elasticsearch", "elasticsearch-8.*", "bin", "elasticsearch"))
	if len(matches) == 0 {
		t.Fatalf("%s is not set and no Elasticsearch distribution is in %s: run the tests with `make test`, "+
			"which unpacks one and sets it", EnvElasticsearchHome, filepath.Join(cache, "elasticsearch"))
	}
	return filepath.Dir(filepath.Dir(matches[len(matches)-1]))
}

func javaHome(t testing.TB) string {
	t.Helper()
	for _, env := range []string{EnvElasticsearchJavaHome, "ES_JAVA_HOME"} {
		if h := os.Getenv(env); h != "" {
			return h
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/jvm/*")
	for _, d := range dirs {
		out, err := exec.Command(filepath.Join(d, "bin", "java"), "-version").CombinedOutput()
		if err != nil {
			continue
		}
		// `openjdk version "17.0.13" …`
		_, rest, ok := strings.Cut(string(out), `version "`)
		major, _, _ := strings.Cut(rest, ".")
		if n, err := strconv.Atoi(strings.TrimSuffix(major, `"`)); ok && err == nil && n >= 17 {
			return d
		}
	}
	t.Fatalf("no JDK 17+ found: set %s (make test installs openjdk-17-jre-headless)", EnvElasticsearchJavaHome)
	return ""
}

// serviceUser is the unprivileged user Elasticsearch and Postgres run as when the tests run as root (both
// refuse root), the one scripts/lib.sh creates.
func serviceUser(t testing.TB) *syscall.Credential {
	t.Helper()
	name := os.Getenv("KH_SERVICE_USER")
	if name == "" {
		name = "kratos-hooks"
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("Elasticsearch and Postgres refuse to run as root and user %q does not exist: run `make test` once, which "+
			"creates it, or set KH_SERVICE_USER: %v", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func chownTree(root string, uid, gid int) error {
	return filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

func copyDir(src, dst string) error {
	return filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
