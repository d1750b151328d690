package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// PostgresProcess is a PostgreSQL server of one test's own, which it may stop (cleanly or as a crash) and
// start again, without disturbing the shared server other tests use.
type PostgresProcess struct {
	// URL is the superuser URL of its postgres database.
	URL string

	bin, dir string
	port     int
	fsync    bool
	cred     *syscall.Credential
	running  bool
}

// PostgresOpts says how to run a private Postgres.
type PostgresOpts struct {
	// NoFsync turns fsync off. Leave it on where a test claims that what was committed survives a crash
	// (Stop with "immediate").
	NoFsync bool
}

// StartPostgres initialises a cluster from the machine's PostgreSQL (scripts/lib.sh installs it) in a folder
// of its own, starts it on a free port of 127.0.0.1, and stops and removes it when the test ends. When the
// tests run as root, Postgres runs as the service user (it refuses root), as scripts/lib.sh runs it.
func StartPostgres(t testing.TB, opts PostgresOpts) *PostgresProcess {
	t.Helper()
	p := &PostgresProcess{bin: postgresBinDir(t), port: FreePort(t), fsync: !opts.NoFsync}
	var err error
	// Not t.TempDir: its parents are private to root, and the service user must reach this folder.
	if p.dir, err = os.MkdirTemp("", "kh-pg-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.running {
			_ = p.pgCtl("stop", "-m", "immediate", "-w")
		}
		if t.Failed() {
			p.dumpLog(t)
		}
		_ = os.RemoveAll(p.dir)
	})
	if os.Geteuid() == 0 {
		p.cred = serviceUser(t)
	}

	var secret [12]byte
	_, _ = rand.Read(secret[:])
	password := hex.EncodeToString(secret[:])
	pwfile := filepath.Join(p.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if p.cred != nil {
		if err := chownTree(p.dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			t.Fatalf("hand %s to the service user: %v", p.dir, err)
		}
	}
	out, err := p.command("initdb", "-D", p.dataDir(), "-U", "postgres", "--pwfile="+pwfile,
		"--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8").CombinedOutput()
	if err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	p.URL = fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable", password, p.port)
	p.Start(t)
	return p
}

// Start starts the server (again, after Stop: same port, same data) and waits until it accepts
// connections, crash recovery included.
func (p *PostgresProcess) Start(t testing.TB) {
	t.Helper()
	fsync := "off"
	if p.fsync {
		fsync = "on"
	}
	settings := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=200 -c shared_buffers=128MB "+
		"-c fsync=%s -c log_min_messages=warning", p.port, p.dir, fsync)
	if err := p.pgCtl("start", "-w", "-t", "120", "-l", filepath.Join(p.dir, "postgres.log"), "-o", settings); err != nil {
		p.dumpLog(t)
		t.Fatalf("start postgres: %v", err)
	}
	p.running = true
}

// Stop stops the server with pg_ctl's shutdown mode: "fast" (clients are disconnected, a checkpoint is
// written) or "immediate" (every process quits at once, as in a crash: the next Start recovers from the
// write-ahead log). It returns once the server is gone.
func (p *PostgresProcess) Stop(t testing.TB, mode string) {
	t.Helper()
	if err := p.pgCtl("stop", "-m", mode, "-w", "-t", "60"); err != nil {
		t.Fatalf("stop postgres (%s): %v", mode, err)
	}
	p.running = false
}

func (p *PostgresProcess) pgCtl(args ...string) error {
	out, err := p.command("pg_ctl", append([]string{"-D", p.dataDir()}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %s: %v\n%s", args[0], err, out)
	}
	return nil
}

// command runs one of the server's programs, as the service user when we are root. With pg_ctl start the
// server's own output goes to its log file (-l), so no pipe of ours is left open behind it.
func (p *PostgresProcess) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	cmd.Dir = p.dir
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	return cmd
}

func (p *PostgresProcess) dataDir() string { return filepath.Join(p.dir, "data") }

func (p *PostgresProcess) dumpLog(t testing.TB) {
	b, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("last lines of the postgres log:\n%s", strings.Join(lines, "\n"))
}

// postgresBinDir finds initdb, pg_ctl and postgres the way scripts/lib.sh does: pg_config's bindir, else
// the newest /usr/lib/postgresql/*/bin.
func postgresBinDir(t testing.TB) string {
	t.Helper()
	usable := func(d string) bool {
		for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
			if fi, err := os.Stat(filepath.Join(d, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); usable(d) {
			return d
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if usable(d) {
			return d
		}
	}
	t.Fatalf("no PostgreSQL server programs (initdb, pg_ctl, postgres) found: run `make test` once, which " +
		"installs them, or install postgresql")
	return ""
}

func versionOf(binDir string) int {
	var v int
	_, _ = fmt.Sscanf(filepath.Base(filepath.Dir(binDir)), "%d", &v)
	return v
}
