package search

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/elastic/go-elasticsearch/v8/esapi"
)

// Hit is one profile found by Search.
type Hit struct {
	IdentityID string
	Email      *string
	Phone      *string
	Name       *string
	Score      float64
}

// Result is a page of hits and how many profiles match in all.
type Result struct {
	Hits  []Hit
	Total int64
}

// MaxLimit is the most hits one search returns.
const MaxLimit = 100

// Search finds profiles by what an operator would type: an e-mail address (whole or its beginning), a phone
// number, a name (all of its words, the last one possibly unfinished) or an identity id. The query text is
// never parsed as query syntax, so no input can make it fail.
func (ix *Index) Search(ctx context.Context, text string, limit int) (Result, error) {
	text = strings.TrimSpace(text)
	limit = min(max(limit, 1), MaxLimit)
	lower := strings.ToLower(text)
	should := []any{
		map[string]any{"term": map[string]any{"email": map[string]any{"value": lower, "boost": 10}}},
		map[string]any{"prefix": map[string]any{"email": map[string]any{"value": lower, "boost": 2}}},
		map[string]any{"term": map[string]any{"identity_id": map[string]any{"value": lower, "boost": 10}}},
		map[string]any{"match": map[string]any{"name": map[string]any{"query": text, "operator": "and", "boost": 3}}},
		map[string]any{"match_phrase_prefix": map[string]any{"name": map[string]any{"query": text}}},
	}
	if phone := digitsOfPhone(text); phone != "" {
		should = append(should, map[string]any{"term": map[string]any{"phone": map[string]any{"value": phone, "boost": 10}}})
	}
	query := map[string]any{
		"size":             limit,
		"track_total_hits": true,
		"_source":          []string{"identity_id", "email", "phone", "name"},
		"query":            map[string]any{"bool": map[string]any{"should": should, "minimum_should_match": 1}},
		"sort":             []any{"_score", map[string]any{"identity_id": "asc"}},
	}
	body, err := json.Marshal(query)
	if err != nil {
		return Result{}, fmt.Errorf("encode search: %w", err)
	}
	var res struct {
		Hits struct {
			Total struct {
				Value int64 `json:"value"`
			} `json:"total"`
			Hits []struct {
				Score  float64 `json:"_score"`
				Source struct {
					IdentityID string  `json:"identity_id"`
					Email      *string `json:"email"`
					Phone      *string `json:"phone"`
					Name       *string `json:"name"`
				} `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	req := esapi.SearchRequest{Index: []string{ix.alias}, Body: bytes.NewReader(body)}
	if err := ix.perform(ctx, req, &res); err != nil {
		return Result{}, fmt.Errorf("search %s: %w", ix.alias, err)
	}
	out := Result{Total: res.Hits.Total.Value, Hits: make([]Hit, 0, len(res.Hits.Hits))}
	for _, h := range res.Hits.Hits {
		out.Hits = append(out.Hits, Hit{
			IdentityID: h.Source.IdentityID, Email: h.Source.Email, Phone: h.Source.Phone, Name: h.Source.Name,
			Score: h.Score,
		})
	}
	return out, nil
}

// digitsOfPhone returns text as a phone number in the form profiles hold (E.164: "+" and digits), or "" when
// it does not look like one. People type "+49 170 1234-567"; Kratos stores "+491701234567".
func digitsOfPhone(text string) string {
	var b strings.Builder
	for i, r := range text {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '+' && i == 0:
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '(' || r == ')' || r == '.':
		default:
			return ""
		}
	}
	if digits := strings.TrimPrefix(b.String(), "+"); len(digits) < 6 {
		return ""
	}
	return b.String()
}
