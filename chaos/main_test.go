package chaos

import (
	"os"
	"testing"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinary()
	os.Exit(code)
}
