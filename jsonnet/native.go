package jsonnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// mapDefault is profile.jsonnet written in Go: the same fields for the same identity, for a few percent
// of the CPU of interpreting it (the mapping was the largest cost of a sync). Keep the two in step: a test
// compares them on the fixtures and on thousands of random identities, and fails on any difference.
func mapDefault(identityJSON []byte) (Fields, error) {
	// Only the traits are read, so only they are decoded.
	var identity struct {
		Traits json.RawMessage `json:"traits"`
	}
	if err := json.Unmarshal(identityJSON, &identity); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return Fields{}, errors.New("identity is not an object")
		}
		return Fields{}, fmt.Errorf("identity is not JSON: %w", err)
	}
	if identity.Traits == nil {
		// identity.traits in Jsonnet: an error when there is no such field.
		return Fields{}, errors.New("field does not exist: traits")
	}
	dec := json.NewDecoder(bytes.NewReader(identity.Traits))
	dec.UseNumber()
	var rawTraits any
	if err := dec.Decode(&rawTraits); err != nil {
		return Fields{}, fmt.Errorf("identity is not JSON: %w", err)
	}
	traits, _ := rawTraits.(map[string]any)
	name, _ := traits["name"].(map[string]any)

	f := Fields{
		Email: or(str(traits["email"]), str(traits["email_address"]), str(firstElement(traits["emails"]))),
		Phone: or(str(traits["phone"]), str(traits["phone_number"]), str(traits["mobile"])),
		Name: or(
			str(traits["name"]),
			join(str(name["first"]), str(name["last"])),
			join(str(name["given"]), str(name["family"])),
			join(str(traits["given_name"]), str(traits["family_name"])),
			join(str(traits["first_name"]), str(traits["last_name"])),
			str(traits["username"]),
		),
		Locale:     or(str(traits["locale"]), str(traits["language"])),
		Attributes: map[string]any{},
	}
	for _, key := range []string{"username", "company", "department", "country"} {
		switch v := traits[key].(type) {
		case string, bool:
			f.Attributes[key] = v
		case json.Number:
			// As Jsonnet has it: a double.
			n, err := v.Float64()
			if err != nil {
				return Fields{}, fmt.Errorf("traits.%s: %w", key, err)
			}
			f.Attributes[key] = n
		}
	}
	return f, nil
}

// str is a non-empty string, or nil.
func str(v any) *string {
	if s, ok := v.(string); ok && s != "" {
		return &s
	}
	return nil
}

// or is the first that is not nil.
func or(candidates ...*string) *string {
	for _, c := range candidates {
		if c != nil {
			return c
		}
	}
	return nil
}

// join is the parts that are not nil, joined with a space; nil when both are.
func join(a, b *string) *string {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	s := *a + " " + *b
	return &s
}

func firstElement(v any) any {
	if list, ok := v.([]any); ok && len(list) > 0 {
		return list[0]
	}
	return nil
}
