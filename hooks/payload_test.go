package hooks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The bodies Kratos sends are whatever jsonnet/webhook.jsonnet renders; its golden files (rendered from
// ctx captured from a real Kratos) are what the decoder must accept, at every hook point.
func TestDecodePayload_AcceptsWhatTheTemplateRendersAtEveryHookPoint(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "jsonnet", "testdata", "webhook", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		point := strings.TrimSuffix(filepath.Base(f), ".json")
		opts := decodeOpts{}
		switch {
		case strings.HasSuffix(point, "-after"):
			opts.identity = true
		case strings.HasSuffix(point, "-validate"):
			opts.preIdentity = true
		}
		p, err := DecodePayload(raw, opts)
		require.NoError(t, err, point)
		require.NotZero(t, p.Flow.ID, point)
		require.Equal(t, "203.0.113.7", p.Request.ClientIP, point)
		if point == "login-after" {
			require.NotNil(t, p.Session.AuthenticatedAt)
		}
	}
}
