package hooks_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/kratos-hooks/kratos-hooks/hooks"
	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/invites"
)

// BenchmarkRegistrationValidate measures the registration validate hook with an invite check, as Kratos
// calls it: 1,000 requests per iteration over loopback HTTP to the service, each a new flow reserving a use
// of an invite in Postgres. It reports the latency percentiles of those requests. Not run by `go test`
// (and so not in CI); run it with
//
//	go test -run '^$' -bench RegistrationValidate -benchtime 3x ./hooks/
func BenchmarkRegistrationValidate(b *testing.B) {
	db := testenv.NewDB(b)
	jobs, err := river.NewClient(riverpgxv5.New(db.Pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(hooks.New(hooks.Opts{
		Logger: slog.New(slog.DiscardHandler), Pool: db.Pool, Jobs: jobs, APIKeys: []string{testenv.APIKey},
		Hooks: true, Gating: hooks.Gating{InviteOnly: true},
	}))
	b.Cleanup(srv.Close)
	ctx := testenv.Context(b)
	code, err := invites.Create(ctx, db.Pool, invites.CreateOpts{Code: true, MaxUses: 1_000_000}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	send := func(body []byte) (time.Duration, error) {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hooks/registration/validate", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testenv.APIKey)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return time.Since(start), nil
	}
	body := func(i int, email string, transient map[string]any) []byte {
		b, _ := json.Marshal(map[string]any{
			"flow":     map[string]any{"id": uuid.NewString(), "transient_payload": transient},
			"identity": map[string]any{"id": uuid.Nil.String(), "traits": map[string]any{"email": email}},
			"request":  map[string]any{"client_ip": fmt.Sprintf("10.%d.%d.1", i/250, i%250)},
		})
		return b
	}
	// Warm up: connections to the service and to Postgres, prepared statements.
	var warm sync.WaitGroup
	for i := range 8 {
		warm.Go(func() {
			for j := range 25 {
				if _, err := send(body(i*25+j, uuid.NewString()+"@example.com", map[string]any{"invite_code": code.Code})); err != nil {
					b.Error(err)
				}
			}
		})
	}
	warm.Wait()

	for _, bc := range []struct {
		name    string
		workers int
		email   bool
	}{
		{"code/sequential", 1, false},
		{"code/8-clients", 8, false},
		{"email/sequential", 1, true},
		{"email/8-clients", 8, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const requests = 1000
			var all []time.Duration
			for b.Loop() {
				b.StopTimer()
				bodies := make([][]byte, requests)
				for i := range bodies {
					email := fmt.Sprintf("bench-%s@example.com", uuid.NewString())
					transient := map[string]any{"invite_code": code.Code}
					if bc.email {
						if _, err := invites.Create(ctx, db.Pool, invites.CreateOpts{Email: email}, time.Now()); err != nil {
							b.Fatal(err)
						}
						transient = nil
					}
					bodies[i] = body(i, email, transient)
				}
				lat := make([]time.Duration, requests)
				next := make(chan int)
				var wg sync.WaitGroup
				for range bc.workers {
					wg.Go(func() {
						for i := range next {
							d, err := send(bodies[i])
							if err != nil {
								b.Error(err)
							}
							lat[i] = d
						}
					})
				}
				b.StartTimer()
				for i := range requests {
					next <- i
				}
				close(next)
				wg.Wait()
				all = append(all, lat...)
			}
			slices.Sort(all)
			pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "max-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
