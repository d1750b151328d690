package bench

// Elasticsearch helpers the benchmarks share: the plain _bulk floor and the requests the runs poll with.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kratos-hooks/kratos-hooks/internal/testenv"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

// bulkFloor loads the documents of every live profile into a fresh index with the profiles
// mapping, with plain _bulk requests of 1,000 documents one after the other, then refreshes it, and returns
// the time taken (reading the rows is not timed).
func bulkFloor(ctx context.Context, b *testing.B, pool *pgxpool.Pool, es testenv.ElasticsearchIndex, want int) time.Duration {
	b.Helper()
	index := es.Alias + "_floor"
	rows, err := pool.Query(ctx, `
SELECT identity_id, schema_id, state, traits, email, email_verified, phone, phone_verified, name, locale,
       attributes, created_at, revision, last_login_at, login_count
FROM profiles WHERE deleted_at IS NULL ORDER BY identity_id`)
	if err != nil {
		b.Fatal(err)
	}
	var docs [][]byte
	for rows.Next() {
		var p profilesync.Profile
		if err := rows.Scan(&p.IdentityID, &p.SchemaID, &p.State, &p.Traits, &p.Email, &p.EmailVerified, &p.Phone,
			&p.PhoneVerified, &p.Name, &p.Locale, &p.Attributes, &p.CreatedAt, &p.Revision, &p.LastLoginAt, &p.LoginCount); err != nil {
			b.Fatal(err)
		}
		doc, err := json.Marshal(profilesync.DocumentFromProfile(p))
		if err != nil {
			b.Fatal(err)
		}
		docs = append(docs, fmt.Appendf(nil, `{"index":{"_id":%q}}`+"\n%s\n", p.IdentityID, doc))
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	if len(docs) != want {
		b.Fatalf("_bulk floor: %d profiles, want %d", len(docs), want)
	}
	mapping, err := os.ReadFile("../search/mapping.json")
	if err != nil {
		b.Fatal(err)
	}
	esDo(ctx, b, http.MethodPut, es.URL+"/"+index, mapping)

	start := time.Now()
	for batch := range slices.Chunk(docs, 1000) {
		resp := esDo(ctx, b, http.MethodPost, es.URL+"/"+index+"/_bulk?filter_path=errors", bytes.Join(batch, nil))
		if !bytes.Contains(resp, []byte(`"errors":false`)) {
			b.Fatalf("_bulk floor: %s", resp)
		}
	}
	esDo(ctx, b, http.MethodPost, es.URL+"/"+index+"/_refresh", nil)
	took := time.Since(start)
	if c, err := testenv.CountDocs(ctx, es.URL, index); err != nil || c != want {
		b.Fatalf("_bulk floor: %d of %d documents searchable (%v)", c, want, err)
	}
	return took
}

func esDo(ctx context.Context, b *testing.B, method, url string, body []byte) []byte {
	b.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, out)
	}
	return out
}

func esRefresh(ctx context.Context, base, index string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/"+index+"/_refresh", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("_refresh on %s: %d", index, resp.StatusCode)
	}
	return nil
}
