package jsonnet_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kratos-hooks/kratos-hooks/jsonnet"
)

// BenchmarkMapper_Map is the profile mapping's share of a sync job: the default mapping, parsed once,
// evaluated on a real identity, one evaluation at a time (ns/op is one mapping's time, as
// BenchmarkIdentityWorker's in ./sync is one job's; scripts/bench.sh reports the ratio).
func BenchmarkMapper_Map(b *testing.B) {
	mapper, ident := defaultMapping(b), sampleIdentity(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := mapper.Map(ident); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMapper_ParseEachTime is what parsing per call would cost, for comparison.
func BenchmarkMapper_ParseEachTime(b *testing.B) {
	ident := sampleIdentity(b)
	b.ReportAllocs()
	for b.Loop() {
		mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := mapper.Map(ident); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMapper_MapBatch is MapBatch on batches of the same identity, at the sizes the service uses (the
// sync worker's batches are up to 100, reconcile maps 50 per evaluation); ns/identity compares with
// BenchmarkMapper_Map's ns/op (one evaluation per identity).
func BenchmarkMapper_MapBatch(b *testing.B) {
	mapper, ident := defaultMapping(b), sampleIdentity(b)
	for _, size := range []int{10, 50, 100} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			batch := make([][]byte, size)
			for i := range batch {
				batch[i] = ident
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, errs := mapper.MapBatch(batch); errs[0] != nil {
					b.Fatal(errs[0])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/identity")
		})
	}
}

func defaultMapping(b *testing.B) *jsonnet.Mapper {
	b.Helper()
	mapper, err := jsonnet.NewMapper("profile.jsonnet", jsonnet.DefaultProfileMapping)
	if err != nil {
		b.Fatal(err)
	}
	return mapper
}

// sampleIdentity is an identity as Kratos returns it, with an e-mail address and a phone number.
func sampleIdentity(b *testing.B) []byte {
	b.Helper()
	ident, err := os.ReadFile(filepath.Join("testdata", "identities", "email-and-phone.json"))
	if err != nil {
		b.Fatal(err)
	}
	return ident
}
