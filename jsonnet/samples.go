package jsonnet

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Sample is an identity made up from an identity schema, to try a mapping on before real identities meet
// it.
type Sample struct {
	Name     string
	Identity []byte
}

// SampleIdentities makes identities that satisfy a Kratos identity schema in different ways: every trait
// filled, only the required traits, and one per anyOf branch of required traits (an e-mail person, a phone
// person). Values follow the declared type and format.
func SampleIdentities(schemaID string, schema json.RawMessage) ([]Sample, error) {
	var root jsonSchema
	if err := json.Unmarshal(schema, &root); err != nil {
		return nil, fmt.Errorf("identity schema %s: %w", schemaID, err)
	}
	traits := root.Properties["traits"]
	if traits == nil {
		return nil, fmt.Errorf("identity schema %s: no properties.traits", schemaID)
	}
	variants := map[string]any{
		"all traits":      traits.sample(func(*jsonSchema, string) bool { return true }),
		"required traits": traits.sample(func(s *jsonSchema, name string) bool { return s.requires(name) }),
	}
	for i, branch := range traits.AnyOf {
		want := map[string]bool{}
		for _, r := range branch.Required {
			want[r] = true
		}
		variants[fmt.Sprintf("anyOf branch %d", i+1)] = traits.sample(func(s *jsonSchema, name string) bool {
			if s == traits {
				return want[name] || s.requires(name)
			}
			return s.requires(name)
		})
	}
	names := make([]string, 0, len(variants))
	for name := range variants {
		names = append(names, name)
	}
	sort.Strings(names)
	now := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	out := make([]Sample, 0, len(names))
	for i, name := range names {
		ident := map[string]any{
			"id":                   fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1),
			"schema_id":            schemaID,
			"state":                "active",
			"traits":               variants[name],
			"verifiable_addresses": []any{},
			"recovery_addresses":   []any{},
			"metadata_public":      nil,
			"created_at":           now,
			"updated_at":           now,
		}
		b, err := json.Marshal(ident)
		if err != nil {
			return nil, err
		}
		out = append(out, Sample{Name: fmt.Sprintf("schema %s, %s", schemaID, name), Identity: b})
	}
	return out, nil
}

// Check maps every sample and returns the first failure, saying which sample it was.
func (m *Mapper) Check(samples []Sample) error {
	for _, s := range samples {
		if _, err := m.Map(s.Identity); err != nil {
			return fmt.Errorf("on a sample identity (%s): %w", s.Name, err)
		}
	}
	return nil
}

// jsonSchema is the part of JSON Schema a sample needs.
type jsonSchema struct {
	Type       any                    `json:"type"`
	Format     string                 `json:"format"`
	Enum       []any                  `json:"enum"`
	Minimum    *float64               `json:"minimum"`
	Properties map[string]*jsonSchema `json:"properties"`
	Items      *jsonSchema            `json:"items"`
	Required   []string               `json:"required"`
	AnyOf      []*jsonSchema          `json:"anyOf"`
	OneOf      []*jsonSchema          `json:"oneOf"`
}

func (s *jsonSchema) requires(name string) bool {
	for _, r := range s.Required {
		if r == name {
			return true
		}
	}
	return false
}

func (s *jsonSchema) typeName() string {
	switch t := s.Type.(type) {
	case string:
		return t
	case []any:
		for _, v := range t {
			if name, ok := v.(string); ok && name != "null" {
				return name
			}
		}
	}
	if s.Properties != nil {
		return "object"
	}
	return "string"
}

// sample builds a value for s; include says which properties of an object to fill.
func (s *jsonSchema) sample(include func(parent *jsonSchema, name string) bool) any {
	if len(s.Enum) > 0 {
		return s.Enum[0]
	}
	switch s.typeName() {
	case "object":
		obj := map[string]any{}
		for name, prop := range s.Properties {
			if prop != nil && include(s, name) {
				obj[name] = prop.sample(include)
			}
		}
		return obj
	case "array":
		if s.Items == nil {
			return []any{}
		}
		return []any{s.Items.sample(include)}
	case "integer", "number":
		if s.Minimum != nil {
			return *s.Minimum
		}
		return 1
	case "boolean":
		return true
	}
	switch s.Format {
	case "email":
		return "sample.person@example.com"
	case "tel":
		return "+15555550100"
	case "date":
		return "2000-01-02"
	case "date-time":
		return "2000-01-02T03:04:05Z"
	case "uri", "url":
		return "https://example.com/sample"
	case "uuid":
		return "00000000-0000-4000-8000-000000000000"
	}
	return "sample"
}
