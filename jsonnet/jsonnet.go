// Package jsonnet holds the Jsonnet templates this project ships (the web_hook body Kratos renders, the
// profile mapping, the SMS body for Kratos's courier) and evaluates the profile mapping. It hides
// go-jsonnet from its callers.
//
// go-jsonnet is pinned to v0.20.0, the version Kratos v1.3.1 pins, so that the tests render webhook.jsonnet
// with the same standard library Kratos has.
package jsonnet

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	gojsonnet "github.com/google/go-jsonnet"
	"github.com/google/go-jsonnet/ast"
)

// WebhookTemplate is the body template of every web_hook this service serves.
//
//go:embed webhook.jsonnet
var WebhookTemplate []byte

// SMSTemplate is the body of the SMS Kratos's courier sends over its HTTP channel (courier.channels, id sms).
//
//go:embed sms.jsonnet
var SMSTemplate []byte

// DefaultProfileMapping maps a Kratos identity to profile fields; PROFILE_MAPPING_FILE replaces it.
//
//go:embed profile.jsonnet
var DefaultProfileMapping []byte

// Fields are what a profile mapping derives from an identity: strings trimmed, blank ones nil, the e-mail
// address lower-cased.
type Fields struct {
	Email      *string        `json:"email"`
	Phone      *string        `json:"phone"`
	Name       *string        `json:"name"`
	Locale     *string        `json:"locale"`
	Attributes map[string]any `json:"attributes"`
}

// Mapper evaluates a profile mapping. The source is parsed once; each Map call evaluates the parsed program
// on a VM from a pool, so a Mapper is safe for concurrent use.
type Mapper struct {
	name string
	node ast.Node
	// identity is the argument identity of Map: inputSource, parsed once.
	identity ast.Node
	// batch is MapBatch's program, built once (batchProgram).
	batch ast.Node
	vms   sync.Pool
}

// NewMapper parses a mapping. name is used in error messages (a file name).
func NewMapper(name string, source []byte) (*Mapper, error) {
	node, err := gojsonnet.SnippetToAST(name, string(source))
	if err != nil {
		return nil, fmt.Errorf("profile mapping %s: %w", name, err)
	}
	identity, err := gojsonnet.SnippetToAST("<identity>", inputSource)
	if err != nil {
		return nil, err
	}
	m := &Mapper{name: name, node: node, identity: identity}
	if m.batch, err = m.batchProgram(); err != nil {
		return nil, fmt.Errorf("profile mapping %s: %w", name, err)
	}
	m.vms.New = func() any { return newVM() }
	return m, nil
}

// MappingError is a mapping that failed to evaluate or returned something that is not a profile. It is
// permanent for the identity it was given: trying again gives the same result.
type MappingError struct {
	Mapping string
	Err     error
}

func (e *MappingError) Error() string { return fmt.Sprintf("profile mapping %s: %v", e.Mapping, e.Err) }
func (e *MappingError) Unwrap() error { return e.Err }

// Map evaluates the mapping with identityJSON (a Kratos identity) as its argument `identity`.
func (m *Mapper) Map(identityJSON []byte) (Fields, error) {
	vm := m.vms.Get().(*vm)
	defer m.vms.Put(vm)
	identity, err := decodeIdentity(identityJSON)
	switch {
	case err == nil:
		vm.TLANode("identity", m.identity)
	case json.Valid(identityJSON):
		// JSON whose numbers do not all fit a float64 (beyond ±1.8e308): handed over as source, which Jsonnet
		// parses lazily, so that such a number fails only a mapping that reads it. MapBatch comes here too,
		// for the identities it could not decode.
		vm.TLACode("identity", string(identityJSON))
	default:
		return Fields{}, &MappingError{Mapping: m.name, Err: err}
	}
	out, err := vm.evaluate(m.node, identity)
	if err != nil {
		// The formatter adds the file position and Jsonnet stack trace.
		return Fields{}, &MappingError{Mapping: m.name, Err: errors.New(strings.TrimSpace(vm.ErrorFormatter.Format(err)))}
	}
	return m.fields([]byte(out))
}

// fields decodes and cleans one identity's mapping output, for Map and MapBatch alike.
func (m *Mapper) fields(out []byte) (Fields, error) {
	var f Fields
	if err := json.Unmarshal(out, &f); err != nil {
		return Fields{}, &MappingError{Mapping: m.name, Err: fmt.Errorf("output is not a profile object: %w", err)}
	}
	// Trimming and lower-casing happen here rather than in the mapping: the std functions that do them
	// are written in Jsonnet and cost more than the rest of a mapping.
	f.Email, f.Phone, f.Name, f.Locale = clean(f.Email), clean(f.Phone), clean(f.Name), clean(f.Locale)
	if f.Email != nil {
		lower := strings.ToLower(*f.Email)
		f.Email = &lower
	}
	for k, v := range f.Attributes {
		if !scalarOrList(v) {
			return Fields{}, &MappingError{Mapping: m.name, Err: fmt.Errorf("attribute %q: want a string, number, boolean or a list of those", k)}
		}
	}
	return f, nil
}

// clean trims s and turns blank into none.
func clean(s *string) *string {
	if s == nil {
		return nil
	}
	trimmed := strings.TrimSpace(*s)
	if trimmed == "" {
		return nil
	}
	return &trimmed
}

func scalarOrList(v any) bool {
	switch t := v.(type) {
	case string, float64, bool, nil:
		return true
	case []any:
		for _, e := range t {
			switch e.(type) {
			case string, float64, bool:
			default:
				return false
			}
		}
		return true
	}
	return false
}
