package gating

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"golang.org/x/net/idna"
)

// DomainSet is a list of e-mail domain patterns: exact domains ("example.com") and subdomain patterns
// ("*.example.com", which matches a.example.com and a.b.example.com but not example.com itself). Matching
// ignores letter case, and internationalised domains are compared in their ASCII (punycode) form, so
// "bücher.example" and "xn--bcher-kva.example" are the same entry. The zero value is empty.
type DomainSet struct {
	exact map[string]struct{}
	// wild holds the parent domain of each "*.parent" pattern.
	wild map[string]struct{}
}

// Len is the number of patterns.
func (s DomainSet) Len() int { return len(s.exact) + len(s.wild) }

// Add adds one pattern. A leading "@" is ignored ("@example.com" is "example.com").
func (s *DomainSet) Add(pattern string) error {
	p := strings.TrimPrefix(strings.TrimSpace(pattern), "@")
	wild := strings.HasPrefix(p, "*.")
	if wild {
		p = p[2:]
	}
	d, ok := normalizeDomain(p)
	if !ok {
		return fmt.Errorf("%q is not a domain or *.domain pattern", pattern)
	}
	if wild {
		if s.wild == nil {
			s.wild = map[string]struct{}{}
		}
		s.wild[d] = struct{}{}
		return nil
	}
	if s.exact == nil {
		s.exact = map[string]struct{}{}
	}
	s.exact[d] = struct{}{}
	return nil
}

// ParseDomains reads patterns separated by commas and/or white space.
func ParseDomains(s string) (DomainSet, error) {
	var set DomainSet
	for _, f := range splitList(s) {
		if err := set.Add(f); err != nil {
			return DomainSet{}, err
		}
	}
	return set, nil
}

// ReadDomains adds the patterns of a domain list file to set: one or more per line (separated by commas or
// white space), with "#" starting a comment. Errors name the line.
func ReadDomains(set *DomainSet, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		for _, f := range splitList(line) {
			if err := set.Add(f); err != nil {
				return fmt.Errorf("line %d: %w", n, err)
			}
		}
	}
	return sc.Err()
}

// Match reports whether domain (already normalised by DomainOf) matches a pattern of the set.
func (s DomainSet) Match(domain string) bool {
	if domain == "" {
		return false
	}
	if _, ok := s.exact[domain]; ok {
		return true
	}
	if len(s.wild) == 0 {
		return false
	}
	for rest := domain; ; {
		_, parent, ok := strings.Cut(rest, ".")
		if !ok || parent == "" {
			return false
		}
		if _, ok := s.wild[parent]; ok {
			return true
		}
		rest = parent
	}
}

// DomainVerdict is the outcome of an e-mail domain check.
type DomainVerdict int

const (
	DomainAllowed DomainVerdict = iota
	// DomainDenied: the domain matches the deny list.
	DomainDenied
	// DomainNotAllowed: there is an allow list and the domain is not on it.
	DomainNotAllowed
)

// DomainPolicy decides by e-mail domain. The deny list wins; an empty allow list allows every domain not
// denied. The zero value allows everything.
type DomainPolicy struct {
	Allowed DomainSet
	Denied  DomainSet
}

// Active reports whether the policy can refuse anything.
func (p DomainPolicy) Active() bool { return p.Allowed.Len() > 0 || p.Denied.Len() > 0 }

// Check decides for an e-mail address and returns the domain it judged (normalised, for messages). An
// address whose domain cannot be read is not allowed by an active policy: a deny list must not be side-
// stepped by a spelling this package does not understand.
func (p DomainPolicy) Check(email string) (DomainVerdict, string) {
	domain := DomainOf(email)
	if domain == "" {
		if p.Active() {
			return DomainNotAllowed, ""
		}
		return DomainAllowed, ""
	}
	if p.Denied.Match(domain) {
		return DomainDenied, domain
	}
	if p.Allowed.Len() > 0 && !p.Allowed.Match(domain) {
		return DomainNotAllowed, domain
	}
	return DomainAllowed, domain
}

// DomainOf returns the normalised domain of an e-mail address (the part after the last "@"), or "" when
// there is none.
func DomainOf(email string) string {
	i := strings.LastIndexByte(email, '@')
	if i < 0 {
		return ""
	}
	d, ok := normalizeDomain(email[i+1:])
	if !ok {
		return ""
	}
	return d
}

// normalizeDomain lower-cases a domain, drops one trailing dot, and converts an internationalised domain to
// its ASCII form. It refuses what cannot be a domain name.
func normalizeDomain(s string) (string, bool) {
	d := strings.TrimSuffix(strings.TrimSpace(s), ".")
	if d == "" || len(d) > 253*4 {
		return "", false
	}
	if !isASCII(d) {
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			return "", false
		}
		d = a
	}
	d = strings.ToLower(d)
	if len(d) > 253 {
		return "", false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	return d, true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
