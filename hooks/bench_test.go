package hooks_test

import (
	"bytes"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
)

// BenchmarkAfterHook_Acknowledgement measures one webhook acknowledgement end to end on loopback: HTTP,
// auth, decode, and the transaction that stores the event and its River job. Each iteration is one
// distinct login event; p50/p99 are reported per request.
//
//	source /tmp/env && go test -run '^$' -bench AfterHook -benchtime 1000x ./hooks/
func BenchmarkAfterHook_Acknowledgement(b *testing.B) {
	db := testenv.NewDB(b)
	url := serve(b, db.Pool, 2*time.Second) + "/hooks/login/after"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	bodies := make([][]byte, b.N)
	for i := range bodies {
		bodies[i] = body(uuid.New())
	}
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[i]))
		req.Header.Set("Authorization", "Bearer "+testenv.APIKey)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		latencies = append(latencies, time.Since(start))
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	b.StopTimer()
	slices.Sort(latencies)
	q := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "max-ms")
}
