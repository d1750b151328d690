package bench

import (
	"os"
	"testing"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// TestMain removes the binary the benchmarks ran (testenv.Binary) once they are done.
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinary()
	os.Exit(code)
}
