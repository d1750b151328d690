package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// binary builds kratos-hooks once per run: the benchmarks run it as its own process, as in production.
func binary(b testing.TB) string {
	b.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kratos-hooks-bench")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "kratos-hooks")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, "../cmd/kratos-hooks").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		b.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// service is a kratos-hooks process started for a benchmark.
type service struct {
	URL string
	cmd *exec.Cmd
}

// startService runs `kratos-hooks <args>` with env on a free port until the benchmark ends.
func startService(b testing.TB, env map[string]string, args ...string) *service {
	b.Helper()
	port := testenv.FreePort(b)
	s := &service{URL: fmt.Sprintf("http://127.0.0.1:%d", port)}
	s.cmd = exec.Command(binary(b), args...)
	s.cmd.Env = append(os.Environ(), "LISTEN_ADDR="+fmt.Sprintf("127.0.0.1:%d", port), "LOG_LEVEL=warn", "HOOKS_API_KEY="+testenv.APIKey)
	for k, v := range env {
		s.cmd.Env = append(s.cmd.Env, k+"="+v)
	}
	stderr, _ := s.cmd.StderrPipe()
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var logTail []string
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logTail = append(logTail, sc.Text())
			if len(logTail) > 50 {
				logTail = logTail[1:]
			}
			mu.Unlock()
		}
	}()
	b.Cleanup(func() {
		_ = s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
		}
		if b.Failed() {
			mu.Lock()
			b.Logf("service log:\n%s", strings.Join(logTail, "\n"))
			mu.Unlock()
		}
	})
	testenv.Poll(b, 30*time.Second, func() error {
		resp, err := http.Get(s.URL + "/health/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %d", resp.StatusCode)
		}
		return nil
	})
	return s
}

// report appends a section to the benchmark report ($BENCH_REPORT, default ../docs/benchmarks.md.part),
// which scripts/bench.sh turns into docs/benchmarks.md.
func report(b testing.TB, section string) {
	b.Helper()
	path := os.Getenv("BENCH_REPORT")
	if path == "" {
		path = filepath.Join("..", "docs", "benchmarks.md.part")
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\n", strings.TrimSpace(section))
	fmt.Fprintln(f)
	b.Log("\n" + section)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

func benchContext(b testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	b.Cleanup(cancel)
	return ctx
}
