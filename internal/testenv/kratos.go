package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// Kratos is a real Kratos v1.3.1 process for one test (or one package), with its own Postgres database.
type Kratos struct {
	PublicURL string
	AdminURL  string
	Admin     *kratos.Client
	// DB is Kratos's own database (to read courier messages, for example).
	DB string

	bin     string
	args    []string
	env     []string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// KratosOpts says how to configure a test Kratos.
type KratosOpts struct {
	// HooksURL is where Kratos reaches the kratos-hooks under test, e.g. http://127.0.0.1:PORT.
	HooksURL string
	// APIKey is the key Kratos sends as Authorization: Bearer.
	APIKey string
	// Template replaces kratos/kratos.yml (it is rendered with the same placeholders).
	Template []byte
	// WebhookBody replaces jsonnet/webhook.jsonnet.
	WebhookBody []byte
	// Overlay is more YAML, given to Kratos as a later config file (it overrides the template).
	Overlay string
	// Database is a database of the test server, with Kratos's schema, for Kratos to use as it is (and leave
	// in place) instead of a clone of KratosTemplate made for this test; see KeepDB.
	Database string
	// WatchCourier runs Kratos's courier in the same process, so that it sends its e-mail and SMS (SMS go
	// to the service's /dev/sms sink). Without it messages only wait in courier_messages.
	WatchCourier bool
}

// APIKey is a hooks API key tests can share.
const APIKey = "test-hooks-api-key-0123456789"

// StartKratos starts Kratos with the shipped configuration (kratos/kratos.yml) rendered for the test, on
// free ports on 127.0.0.1, and stops it when the test ends. It fails the test if Kratos does not become
// ready.
func StartKratos(t testing.TB, opts KratosOpts) *Kratos {
	t.Helper()
	bin := Getenv(t, EnvKratosBin)
	if opts.APIKey == "" {
		opts.APIKey = APIKey
	}
	if opts.HooksURL == "" {
		opts.HooksURL = "http://127.0.0.1:1" // nothing listens there: hooks fail, flows go on
	}
	if opts.Template == nil {
		opts.Template = kratos.ConfigTemplate
	}
	if opts.WebhookBody == nil {
		opts.WebhookBody = jsonnet.WebhookTemplate
	}
	base, err := kratos.RenderConfig(opts.Template, kratos.ConfigVars{
		HooksURL: opts.HooksURL, APIKey: opts.APIKey,
		IdentitySchema: kratos.IdentitySchema, WebhookBody: opts.WebhookBody, SMSBody: jsonnet.SMSTemplate,
	}.Map())
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	publicPort, adminPort := FreePort(t), FreePort(t)
	k := &Kratos{
		PublicURL: fmt.Sprintf("http://127.0.0.1:%d", publicPort),
		AdminURL:  fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		logPath:   filepath.Join(dir, "kratos.log"),
	}
	local := fmt.Sprintf(`serve:
  public: {base_url: "%s/", host: 127.0.0.1, port: %d}
  admin: {base_url: "%s/", host: 127.0.0.1, port: %d}
log: {level: info, format: text}
`, k.PublicURL, publicPort, k.AdminURL, adminPort)
	files := map[string]string{"kratos.yml": string(base), "local.yml": local, "overlay.yml": opts.Overlay}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	k.DB = opts.Database
	if k.DB == "" {
		k.DB = kratosDatabase(t)
	}
	k.args = []string{"serve", "-c", filepath.Join(dir, "kratos.yml"), "-c", filepath.Join(dir, "local.yml")}
	if opts.Overlay != "" {
		k.args = append(k.args, "-c", filepath.Join(dir, "overlay.yml"))
	}
	k.args = append(k.args, "--dev", "--sqa-opt-out")
	if opts.WatchCourier {
		k.args = append(k.args, "--watch-courier")
	}
	k.bin = bin
	k.env = append(os.Environ(), "DSN="+DatabaseURL(t, k.DB))
	// Batch creates of 2,000 identities take more than the client's default 10 s on a busy 2-core machine.
	if k.Admin, err = kratos.NewClient(k.AdminURL, &http.Client{Timeout: 3 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.Stop()
		if t.Failed() {
			k.dumpLog(t)
		}
	})
	k.Start(t)
	return k
}

// Start starts Kratos again after Stop, on the same ports and database.
func (k *Kratos) Start(t testing.TB) {
	t.Helper()
	logFile, err := os.OpenFile(k.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	k.exited = make(chan struct{})
	k.cmd = exec.Command(k.bin, k.args...)
	k.cmd.Env = k.env
	k.cmd.Stdout, k.cmd.Stderr = logFile, logFile
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start kratos: %v", err)
	}
	exited := k.exited
	go func() { _ = k.cmd.Wait(); logFile.Close(); close(exited) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(k.AdminURL + "/admin/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			k.dumpLog(t)
			t.Fatalf("kratos exited before it was ready")
		default:
		}
		if time.Now().After(deadline) {
			k.dumpLog(t)
			t.Fatalf("kratos not ready after 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops Kratos (an outage, for tests that need one); Start brings it back. Cleanup stops it too.
func (k *Kratos) Stop() {
	if k.cmd == nil {
		return
	}
	select {
	case <-k.exited:
		return
	default:
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(10 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
}

func (k *Kratos) dumpLog(t testing.TB) {
	b, _ := os.ReadFile(k.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	t.Logf("last lines of the kratos log:\n%s", strings.Join(lines, "\n"))
}

// LogContains reports whether Kratos logged s (to check what it did with a hook).
func (k *Kratos) LogContains(s string) bool {
	b, _ := os.ReadFile(k.logPath)
	return bytes.Contains(b, []byte(s))
}

// KratosTemplate returns the database that `kratos migrate sql` filled once per Kratos binary: clone it (or
// give it to KeepDB as the template) for a Kratos database of your own.
func KratosTemplate(t testing.TB) string {
	t.Helper()
	bin := Getenv(t, EnvKratosBin)
	sum := sha256.Sum256([]byte(bin + fileStamp(bin)))
	return KeepDB(t, "kratos_tpl_"+hex.EncodeToString(sum[:8]), "template0", 5*time.Minute, func(ctx context.Context, url string) error {
		// The migrations need no configuration, only the DSN.
		cmd := exec.CommandContext(ctx, bin, "migrate", "sql", "-e", "--yes")
		cmd.Env = append(os.Environ(), "DSN="+url)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("kratos migrate sql: %v\n%s", err, out)
		}
		return nil
	})
}

// kratosDatabase makes a Postgres database for one Kratos, cloned from KratosTemplate.
func kratosDatabase(t testing.TB) string {
	t.Helper()
	db := createDB(t, KratosTemplate(t))
	db.Pool.Close()
	return db.Name
}

func fileStamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d-%d", fi.Size(), fi.ModTime().UnixNano())
}
