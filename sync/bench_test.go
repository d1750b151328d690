package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// BenchmarkIdentityWorker measures whole sync jobs (identity lock, Kratos admin GET, profile mapping,
// upsert, completion in the same transaction) against a real Kratos and Postgres, one job at a time.
// ns/op includes River's wait between fetches; ns/job-run, the median of each job's time from its start to
// its completion (River's attempted_at to finalized_at), is the job's own time.
//
//	source /tmp/env && go test -run '^$' -bench IdentityWorker -benchtime 500x ./sync/
func BenchmarkIdentityWorker(b *testing.B) {
	bundle := setupB(b)
	ids := make([]river.InsertManyParams, b.N)
	for i := range ids {
		traits, _ := json.Marshal(testenv.Traits(fmt.Sprintf("bench-%d-%s@example.com", i, testenv.Name("b")), "Bench", "Mark"))
		ident, err := bundle.kratos.Admin.CreateIdentity(context.Background(), kratos.CreateIdentityBody{SchemaID: "person", Traits: traits})
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = river.InsertManyParams{Args: profilesync.IdentityArgs{IdentityID: ident.ID}}
	}
	client := bundle.startWorkersN(b, 1)
	events, cancel := client.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed)
	defer cancel()

	b.ResetTimer()
	if _, err := client.InsertMany(context.Background(), ids); err != nil {
		b.Fatal(err)
	}
	runs := make([]time.Duration, 0, b.N)
	for done := 0; done < b.N; {
		select {
		case ev := <-events:
			if ev.Kind != river.EventKindJobCompleted {
				b.Fatalf("job failed: %v", ev.Job.Errors)
			}
			if ev.Job.AttemptedAt != nil && ev.Job.FinalizedAt != nil {
				runs = append(runs, ev.Job.FinalizedAt.Sub(*ev.Job.AttemptedAt))
			}
			done++
		case <-time.After(time.Minute):
			b.Fatalf("only %d of %d jobs done", done, b.N)
		}
	}
	b.StopTimer()
	if len(runs) > 0 {
		slices.Sort(runs)
		b.ReportMetric(float64(runs[len(runs)/2].Nanoseconds()), "ns/job-run")
	}
}
