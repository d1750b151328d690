package search

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/google/uuid"
)

// DocumentVersions returns the external version of each id's document in the index; ids without a document are
// absent from the map. One _mget request, without the documents' content.
func (ix *Index) DocumentVersions(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	out := make(map[uuid.UUID]int64, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	body, err := json.Marshal(map[string]any{"ids": strs})
	if err != nil {
		return nil, err
	}
	var res struct {
		Docs []struct {
			ID      string `json:"_id"`
			Found   bool   `json:"found"`
			Version int64  `json:"_version"`
		} `json:"docs"`
	}
	req := esapi.MgetRequest{Index: ix.alias, Body: bytes.NewReader(body), Source: []string{"false"}}
	if err := ix.perform(ctx, req, &res); err != nil {
		return nil, fmt.Errorf("read document versions: %w", err)
	}
	for _, d := range res.Docs {
		if !d.Found {
			continue
		}
		id, err := uuid.Parse(d.ID)
		if err != nil {
			continue // not one of ours
		}
		out[id] = d.Version
	}
	return out, nil
}
