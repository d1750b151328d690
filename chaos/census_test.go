package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// census is what Kratos, the profiles table and the search index each hold, read straight from them: Kratos
// through its admin list, the index through _mget and _count, never through the code under test.
type census struct {
	kratos   map[uuid.UUID]kratos.Identity
	profiles map[uuid.UUID]profileRow
	docs     map[uuid.UUID]esDoc
	// indexed is the number of documents the alias holds.
	indexed int
}

type profileRow struct {
	SchemaID    string
	State       string
	Traits      json.RawMessage
	Revision    int64
	LoginCount  int64
	LastLoginAt *time.Time
	DeletedAt   *time.Time
}

type esDoc struct {
	ID      string         `json:"_id"`
	Found   bool           `json:"found"`
	Version int64          `json:"_version"`
	Source  map[string]any `json:"_source"`
}

// takeCensus reads everything Kratos lists, every profile row, and the document of every identity either of
// them (or also) names.
func (s *stack) takeCensus(t *testing.T, also []uuid.UUID) census {
	t.Helper()
	ctx := context.Background()
	c := census{kratos: map[uuid.UUID]kratos.Identity{}, profiles: map[uuid.UUID]profileRow{}, docs: map[uuid.UUID]esDoc{}}

	for token := ""; ; {
		page, err := s.admin.ListIdentities(ctx, kratos.ListOpts{PageSize: kratos.MaxPageSize, PageToken: token})
		require.NoError(t, err, "page the Kratos admin list")
		for _, ident := range page.Identities {
			c.kratos[ident.ID] = ident
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}

	rows, err := s.db.Query(ctx, `SELECT identity_id, schema_id, state, traits, revision, login_count, last_login_at, deleted_at FROM profiles`)
	require.NoError(t, err)
	for rows.Next() {
		var id uuid.UUID
		var p profileRow
		require.NoError(t, rows.Scan(&id, &p.SchemaID, &p.State, &p.Traits, &p.Revision, &p.LoginCount, &p.LastLoginAt, &p.DeletedAt))
		c.profiles[id] = p
	}
	require.NoError(t, rows.Err())

	ids := map[uuid.UUID]bool{}
	for id := range c.kratos {
		ids[id] = true
	}
	for id := range c.profiles {
		ids[id] = true
	}
	for _, id := range also {
		ids[id] = true
	}
	var batch []uuid.UUID
	for id := range ids {
		if batch = append(batch, id); len(batch) == 1000 {
			s.mget(t, batch, c.docs)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		s.mget(t, batch, c.docs)
	}

	s.es(t, http.MethodPost, "/"+s.alias+"/_refresh", nil, nil)
	var count struct {
		Count int `json:"count"`
	}
	s.es(t, http.MethodGet, "/"+s.alias+"/_count", nil, &count)
	c.indexed = count.Count
	return c
}

func (s *stack) mget(t *testing.T, ids []uuid.UUID, into map[uuid.UUID]esDoc) {
	t.Helper()
	var got struct {
		Docs []esDoc `json:"docs"`
	}
	s.es(t, http.MethodPost, "/"+s.alias+"/_mget", map[string]any{"ids": ids}, &got)
	require.Len(t, got.Docs, len(ids))
	for _, d := range got.Docs {
		into[uuid.MustParse(d.ID)] = d
	}
}

// es makes one request to Elasticsearch itself.
func (s *stack) es(t *testing.T, method, path string, in, out any) {
	t.Helper()
	var body bytes.Buffer
	if in != nil {
		require.NoError(t, json.NewEncoder(&body).Encode(in))
	}
	req, err := http.NewRequest(method, s.esURL+path, &body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err, "%s %s", method, path)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s %s", method, path)
	if out != nil {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	}
}

// check says how identity id differs from what Kratos has, or returns nil when the profile and the document
// both hold Kratos's identity, the document at the profile's revision. For an identity Kratos does not have
// (deleted), neither may hold it: the profile is a tombstone or absent, and there is no document.
func (c census) check(id uuid.UUID) error {
	ident, inKratos := c.kratos[id]
	p, hasProfile := c.profiles[id]
	d := c.docs[id]
	if !inKratos {
		switch {
		case hasProfile && p.DeletedAt == nil:
			return fmt.Errorf("%s: Kratos does not have it, but its profile is live", id)
		case d.Found:
			return fmt.Errorf("%s: Kratos does not have it, but the index has its document at version %d", id, d.Version)
		}
		return nil
	}
	switch {
	case !hasProfile:
		return fmt.Errorf("%s: no profile", id)
	case p.DeletedAt != nil:
		return fmt.Errorf("%s: the profile is a tombstone, but Kratos has the identity", id)
	case p.SchemaID != ident.SchemaID || p.State != ident.State || !sameJSON(p.Traits, ident.Traits):
		return fmt.Errorf("%s: the profile (%s, %s, %s) differs from Kratos (%s, %s, %s)", id, p.SchemaID, p.State, p.Traits,
			ident.SchemaID, ident.State, ident.Traits)
	case !d.Found:
		return fmt.Errorf("%s: no document in the index", id)
	case d.Version != p.Revision:
		return fmt.Errorf("%s: the document is at version %d, the profile at revision %d", id, d.Version, p.Revision)
	case !sameJSON(d.Source["traits"], ident.Traits) || d.Source["state"] != ident.State:
		return fmt.Errorf("%s: the document (%v, %v) differs from Kratos (%s, %s)", id, d.Source["state"], d.Source["traits"], ident.State, ident.Traits)
	}
	return nil
}

// present counts the identities among ids that are as Kratos has them, and returns the reasons for (up to
// ten of) the others.
func (c census) present(ids []uuid.UUID) (n int, wrong []string) {
	for _, id := range ids {
		if err := c.check(id); err != nil {
			if len(wrong) < 10 {
				wrong = append(wrong, err.Error())
			}
			continue
		}
		n++
	}
	return n, wrong
}

// requireEqualsKratos fails the test unless the profiles and the index equal Kratos identity by identity:
// every identity Kratos lists is there, and nothing else is live.
func (c census) requireEqualsKratos(t *testing.T) {
	t.Helper()
	ids := make([]uuid.UUID, 0, len(c.kratos))
	for id := range c.kratos {
		ids = append(ids, id)
	}
	n, wrong := c.present(ids)
	require.Equal(t, len(ids), n, "identities in Kratos not as Kratos has them; the first:\n%s", strings.Join(wrong, "\n"))
	live := 0
	for _, p := range c.profiles {
		if p.DeletedAt == nil {
			live++
		}
	}
	require.Equal(t, len(c.kratos), live, "live profiles")
	require.Equal(t, len(c.kratos), c.indexed, "documents in the index")
}

// sameJSON reports whether two JSON values (raw or decoded) are equal as JSON.
func sameJSON(a, b any) bool {
	norm := func(v any) any {
		raw, ok := v.(json.RawMessage)
		if !ok {
			var err error
			if raw, err = json.Marshal(v); err != nil {
				return err
			}
		}
		var out any
		if err := json.Unmarshal(raw, &out); err != nil {
			return err
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
