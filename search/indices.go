package search

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/elastic/go-elasticsearch/v8/esapi"
)

// mapping is the settings and mappings of a new profiles index. Changing it means bumping its
// kratos_hooks_mapping_version and running `kratos-hooks reindex`, which fills a new versioned index from
// Postgres and moves the alias (the test distribution has no _reindex, and a projection can always be
// rebuilt from its source anyway).
//
// The top level is "dynamic": false, so a field this code does not know yet (during a rolling upgrade) is
// kept in _source but never added to the mapping. traits and attributes are "flattened": one field each,
// whatever keys an identity schema has, so no schema can explode the mapping.
//
//go:embed mapping.json
var mapping []byte

// MappingVersion is the version of the mapping this code writes; an index made by an older one is reported
// by Ensure and replaced by `kratos-hooks reindex`.
var MappingVersion = mustMappingVersion(mapping)

func mustMappingVersion(m []byte) int {
	var v struct {
		Mappings struct {
			Meta struct {
				Version int `json:"kratos_hooks_mapping_version"`
			} `json:"_meta"`
		} `json:"mappings"`
	}
	if err := json.Unmarshal(m, &v); err != nil || v.Mappings.Meta.Version < 1 {
		panic("search: mapping.json has no _meta.kratos_hooks_mapping_version")
	}
	return v.Mappings.Meta.Version
}

// VersionedName is the name of version n of the index behind alias.
func VersionedName(alias string, n int) string { return alias + "-v" + strconv.Itoa(n) }

// versionOf returns n for an index named <alias>-v<n>, or 0.
func versionOf(alias, index string) int {
	rest, ok := strings.CutPrefix(index, alias+"-v")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 || strconv.Itoa(n) != rest {
		return 0
	}
	return n
}

// EnsureResult says what Ensure found or did.
type EnsureResult struct {
	// Index is the concrete index the alias points at.
	Index string
	// Created is true when this call created the index and the alias.
	Created bool
	// MappingVersion is the mapping version of Index; below MappingVersion means `kratos-hooks reindex` is due.
	MappingVersion int
}

// ErrNameTaken means a concrete index has the alias's name, so the alias cannot be made. It happens when
// something wrote to the name before the alias existed and Elasticsearch created an index on the fly.
var ErrNameTaken = errors.New("an index (not an alias) has this name")

// Ensure makes sure the alias exists: when it does not, it creates <alias>-v1 with the mapping and points the
// alias at it. Running it again changes nothing; several processes may run it at once.
func (ix *Index) Ensure(ctx context.Context) (EnsureResult, error) {
	targets, err := ix.aliasTargets(ctx)
	if err != nil {
		return EnsureResult{}, err
	}
	res := EnsureResult{}
	if len(targets) == 0 {
		res.Index = VersionedName(ix.alias, 1)
		created, err := ix.createIndex(ctx, res.Index, nil)
		if err != nil {
			return EnsureResult{}, err
		}
		// Adding an alias that is already there succeeds, so a concurrent Ensure is harmless.
		if err := ix.updateAliases(ctx, []aliasAction{{Add: &aliasRef{Index: res.Index, Alias: ix.alias}}}); err != nil {
			return EnsureResult{}, fmt.Errorf("point alias %s at %s: %w", ix.alias, res.Index, err)
		}
		res.Created = created
	} else {
		res.Index = targets[0]
	}
	if res.MappingVersion, err = ix.mappingVersion(ctx, res.Index); err != nil {
		return EnsureResult{}, err
	}
	return res, nil
}

// aliasTargets returns the indices the alias points at (none when it does not exist), and ErrNameTaken when
// a concrete index holds the name.
func (ix *Index) aliasTargets(ctx context.Context) ([]string, error) {
	var got map[string]json.RawMessage
	err := ix.perform(ctx, esapi.IndicesGetAliasRequest{Name: []string{ix.alias}}, &got)
	if isStatus(err, http.StatusNotFound) {
		var exists bool
		if exists, err = ix.indexExists(ctx, ix.alias); err == nil && exists {
			return nil, fmt.Errorf("alias %s: %w; delete that index or choose another ELASTICSEARCH_INDEX", ix.alias, ErrNameTaken)
		}
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("look up alias %s: %w", ix.alias, err)
	}
	targets := make([]string, 0, len(got))
	for name := range got {
		targets = append(targets, name)
	}
	slices.Sort(targets)
	return targets, nil
}

func (ix *Index) indexExists(ctx context.Context, name string) (bool, error) {
	err := ix.perform(ctx, esapi.IndicesExistsRequest{Index: []string{name}, ExpandWildcards: "none"}, nil)
	if isStatus(err, http.StatusNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up index %s: %w", name, err)
	}
	return true, nil
}

// createIndex creates name with the mapping, with extra index settings on top. It returns created=false
// when the index already exists.
func (ix *Index) createIndex(ctx context.Context, name string, settings map[string]any) (created bool, err error) {
	body := mapping
	if len(settings) > 0 {
		var m struct {
			Settings struct {
				Index map[string]any `json:"index"`
			} `json:"settings"`
			Mappings json.RawMessage `json:"mappings"`
		}
		if err := json.Unmarshal(mapping, &m); err != nil {
			return false, fmt.Errorf("read mapping: %w", err)
		}
		for k, v := range settings {
			m.Settings.Index[k] = v
		}
		if body, err = json.Marshal(m); err != nil {
			return false, fmt.Errorf("encode mapping: %w", err)
		}
	}
	err = ix.perform(ctx, esapi.IndicesCreateRequest{Index: name, Body: bytes.NewReader(body)}, nil)
	var re *ResponseError
	if errors.As(err, &re) && re.Type == "resource_already_exists_exception" {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create index %s: %w", name, err)
	}
	return true, nil
}

func (ix *Index) mappingVersion(ctx context.Context, index string) (int, error) {
	var got map[string]struct {
		Mappings struct {
			Meta struct {
				Version int `json:"kratos_hooks_mapping_version"`
			} `json:"_meta"`
		} `json:"mappings"`
	}
	if err := ix.perform(ctx, esapi.IndicesGetMappingRequest{Index: []string{index}}, &got); err != nil {
		return 0, fmt.Errorf("read mapping of %s: %w", index, err)
	}
	return got[index].Mappings.Meta.Version, nil
}

type aliasRef struct {
	Index string `json:"index"`
	Alias string `json:"alias"`
}

type aliasAction struct {
	Add    *aliasRef `json:"add,omitempty"`
	Remove *aliasRef `json:"remove,omitempty"`
}

// updateAliases applies actions in one atomic step: readers and writers see the alias move at once.
func (ix *Index) updateAliases(ctx context.Context, actions []aliasAction) error {
	body, err := json.Marshal(map[string]any{"actions": actions})
	if err != nil {
		return err
	}
	return ix.perform(ctx, esapi.IndicesUpdateAliasesRequest{Body: bytes.NewReader(body)}, nil)
}

// Versions lists the versioned indices behind this alias's name (<alias>-v1, …), oldest first, whether the
// alias points at them or not.
func (ix *Index) Versions(ctx context.Context) ([]string, error) {
	var rows []struct {
		Index string `json:"index"`
	}
	err := ix.perform(ctx, esapi.CatIndicesRequest{
		Index: []string{ix.alias + "-v*"}, Format: "json", H: []string{"index"}, ExpandWildcards: "all",
	}, &rows)
	if err != nil {
		return nil, fmt.Errorf("list indices of %s: %w", ix.alias, err)
	}
	var names []string
	for _, r := range rows {
		if versionOf(ix.alias, r.Index) > 0 {
			names = append(names, r.Index)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return versionOf(ix.alias, a) - versionOf(ix.alias, b) })
	return names, nil
}

// CreateNextVersion creates <alias>-v<n+1>, n being the highest version there is, with the current mapping
// and refreshes off (it is about to be bulk-loaded; FinishLoad turns them back on). The alias does not move.
func (ix *Index) CreateNextVersion(ctx context.Context) (string, error) {
	names, err := ix.Versions(ctx)
	if err != nil {
		return "", err
	}
	next := 1
	if len(names) > 0 {
		next = versionOf(ix.alias, names[len(names)-1]) + 1
	}
	name := VersionedName(ix.alias, next)
	created, err := ix.createIndex(ctx, name, map[string]any{"refresh_interval": "-1"})
	if err != nil {
		return "", err
	}
	if !created {
		return "", fmt.Errorf("create index %s: another reindex created it a moment ago", name)
	}
	return name, nil
}

// FinishLoad turns refreshes back on for a bulk-loaded index and makes everything written searchable.
func (ix *Index) FinishLoad(ctx context.Context, index string) error {
	body := strings.NewReader(`{"index":{"refresh_interval":null}}`)
	if err := ix.perform(ctx, esapi.IndicesPutSettingsRequest{Index: []string{index}, Body: body}, nil); err != nil {
		return fmt.Errorf("turn refreshes on for %s: %w", index, err)
	}
	return ix.Refresh(ctx, index)
}

// Refresh makes everything written to index (or the alias, when index is empty) searchable now.
func (ix *Index) Refresh(ctx context.Context, index string) error {
	if index == "" {
		index = ix.alias
	}
	if err := ix.perform(ctx, esapi.IndicesRefreshRequest{Index: []string{index}}, nil); err != nil {
		return fmt.Errorf("refresh %s: %w", index, err)
	}
	return nil
}

// SwapAlias points the alias at index alone, in one atomic step, and returns the indices it pointed at
// before.
func (ix *Index) SwapAlias(ctx context.Context, index string) (previous []string, err error) {
	if previous, err = ix.aliasTargets(ctx); err != nil {
		return nil, err
	}
	actions := []aliasAction{{Add: &aliasRef{Index: index, Alias: ix.alias}}}
	for _, p := range previous {
		if p != index {
			actions = append(actions, aliasAction{Remove: &aliasRef{Index: p, Alias: ix.alias}})
		}
	}
	if err := ix.updateAliases(ctx, actions); err != nil {
		return nil, fmt.Errorf("move alias %s to %s: %w", ix.alias, index, err)
	}
	return previous, nil
}

// DeleteIndex deletes one concrete index (an old version after a reindex).
func (ix *Index) DeleteIndex(ctx context.Context, index string) error {
	if versionOf(ix.alias, index) == 0 {
		return fmt.Errorf("delete index %s: not a version of %s", index, ix.alias)
	}
	if err := ix.perform(ctx, esapi.IndicesDeleteRequest{Index: []string{index}}, nil); err != nil {
		return fmt.Errorf("delete index %s: %w", index, err)
	}
	return nil
}

// Health says whether the cluster can take writes to the alias: it answers, is not red, and the alias
// exists.
func (ix *Index) Health(ctx context.Context) error {
	var h struct {
		Status string `json:"status"`
	}
	if err := ix.perform(ctx, esapi.ClusterHealthRequest{}, &h); err != nil {
		return fmt.Errorf("cluster health: %w", err)
	}
	if h.Status == "red" {
		return errors.New("cluster health is red")
	}
	targets, err := ix.aliasTargets(ctx)
	if err != nil {
		return err
	}
	if len(targets) == 0 {
		return fmt.Errorf("alias %s does not exist: run `kratos-hooks migrate`", ix.alias)
	}
	return nil
}
