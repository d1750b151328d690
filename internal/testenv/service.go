package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// Binary builds the kratos-hooks binary once per test process and returns its path. Tests that must run
// the program as its own process (to kill it, or to measure it as it runs in production) start this. Call
// RemoveBinary from TestMain once the package's tests are done.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kratos-hooks-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "kratos-hooks")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, "github.com/kratos-hooks/kratos-hooks/cmd/kratos-hooks").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("build kratos-hooks: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// RemoveBinary deletes what Binary built, if anything.
func RemoveBinary() {
	if buildOnce.path != "" {
		_ = os.RemoveAll(filepath.Dir(buildOnce.path))
	}
}

// ServiceOpts says how to run a kratos-hooks process.
type ServiceOpts struct {
	// Args are the command line, for example serve --role worker. Default: serve.
	Args []string
	// Env is added to the process's environment, after the defaults: LISTEN_ADDR on a free port of
	// 127.0.0.1, LOG_LEVEL=warn and HOOKS_API_KEY=APIKey.
	Env map[string]string
}

// Service is a kratos-hooks process (the built binary, as in production) that a test may kill and start
// again.
type Service struct {
	URL string

	bin  string
	args []string
	env  []string
	log  *logTail

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartService runs the binary with opts until the test ends and waits until /health/ready answers 200.
func StartService(t testing.TB, opts ServiceOpts) *Service {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	s := &Service{URL: "http://" + addr, bin: Binary(t), args: opts.Args, log: &logTail{max: 200}}
	if len(s.args) == 0 {
		s.args = []string{"serve"}
	}
	s.env = append(os.Environ(), "LISTEN_ADDR="+addr, "LOG_LEVEL=warn", "HOOKS_API_KEY="+APIKey)
	for k, v := range opts.Env {
		s.env = append(s.env, k+"="+v)
	}
	t.Cleanup(func() {
		s.Stop(t)
		if t.Failed() {
			t.Logf("last lines of the log of kratos-hooks %s:\n%s", strings.Join(s.args, " "), s.log.String())
		}
	})
	s.Start(t)
	return s
}

// Start starts the process (again, after Kill or Stop: same address, same environment) and waits until
// /health/ready answers 200.
func (s *Service) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kratos-hooks: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	WaitReady(t, s.URL, 60*time.Second, func() string {
		select {
		case <-exited:
			return fmt.Sprintf("kratos-hooks %s: %s\n%s", strings.Join(s.args, " "), cmd.ProcessState, s.log.String())
		default:
			return ""
		}
	})
}

// Pid is the process id of the running process (0 when it is not running).
func (s *Service) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Cmd is the command of the running process (for a benchmark that reads its resource use).
func (s *Service) Cmd() *exec.Cmd {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd
}

// Kill sends SIGKILL, as the OOM killer or a lost node would, and waits until the process is gone. Nothing
// of the service's shutdown runs.
func (s *Service) Kill(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGKILL, 10*time.Second)
}

// Stop stops the process gracefully (SIGTERM), killing it if it does not exit within 30 s.
func (s *Service) Stop(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGTERM, 30*time.Second)
}

func (s *Service) signal(t testing.TB, sig syscall.Signal, wait time.Duration) {
	t.Helper()
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(wait):
		t.Errorf("kratos-hooks %s did not exit within %s of %s; killing it", strings.Join(s.args, " "), wait, sig)
		_ = cmd.Process.Kill()
		<-exited
	}
	fmt.Fprintf(s.log, "--- %s: %s ---\n", sig, cmd.ProcessState)
}

// Log is the tail of what the process wrote (stdout and stderr), across restarts.
func (s *Service) Log() string { return s.log.String() }

// RunBinary runs the kratos-hooks binary to completion with env (and nothing else of the test's environment
// but PATH and HOME), as cron or a CronJob would run it.
func RunBinary(t testing.TB, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// logTail keeps the last lines written to it.
type logTail struct {
	mu      sync.Mutex
	max     int
	lines   []string
	partial []byte
}

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	if over := len(l.lines) - l.max; over > 0 {
		l.lines = append(l.lines[:0], l.lines[over:]...)
	}
	return len(p), nil
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(append(l.lines, string(l.partial)), "\n")
}
