package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	"github.com/kratos-hooks/kratos-hooks/kratos"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// BenchmarkIdentityWorker measures whole sync jobs (River fetch, identity lock, Kratos admin GET, profile
// mapping, upsert, completion in the same transaction) against a real Kratos and Postgres, one job at a
// time: ns/op is the time of one job.
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
	for done := 0; done < b.N; {
		select {
		case ev := <-events:
			if ev.Kind != river.EventKindJobCompleted {
				b.Fatalf("job failed: %v", ev.Job.Errors)
			}
			done++
		case <-time.After(time.Minute):
			b.Fatalf("only %d of %d jobs done", done, b.N)
		}
	}
}
