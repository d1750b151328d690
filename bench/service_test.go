package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// service is a kratos-hooks process started for a benchmark: the built binary, as in production.
type service struct {
	URL string
	cmd *exec.Cmd
}

// startService runs `kratos-hooks <args>` with env on a free port until the benchmark ends (see
// testenv.StartService).
func startService(b testing.TB, env map[string]string, args ...string) *service {
	b.Helper()
	s := testenv.StartService(b, testenv.ServiceOpts{Args: args, Env: env})
	return &service{URL: s.URL, cmd: s.Cmd()}
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
