// Package gating holds the pure rules that decide who may register or log in: IP address ranges and e-mail
// domain lists. It parses configuration and matches values, and knows nothing of HTTP, Kratos or
// Postgres, so that every rule can be table-tested and fuzzed on its own.
package gating

import (
	"fmt"
	"net/netip"
	"strings"
)

// MissingPolicy says what happens to a request whose client address is unknown (no True-Client-Ip).
type MissingPolicy string

const (
	MissingAllow MissingPolicy = "allow"
	MissingDeny  MissingPolicy = "deny"
)

// ParseMissingPolicy reads "allow" or "deny" (any letter case); "" is allow.
func ParseMissingPolicy(s string) (MissingPolicy, error) {
	switch p := MissingPolicy(strings.ToLower(strings.TrimSpace(s))); p {
	case "":
		return MissingAllow, nil
	case MissingAllow, MissingDeny:
		return p, nil
	}
	return "", fmt.Errorf("%q: want allow or deny", s)
}

// IPVerdict is the outcome of an IP check.
type IPVerdict int

const (
	IPAllowed IPVerdict = iota
	// IPDenied: the address is in a denied range, or outside every allowed range.
	IPDenied
	// IPMissing: there is no usable address and the policy for that is deny.
	IPMissing
)

// IPPolicy decides by client address. Denied ranges win over allowed ones; with no allowed ranges every
// address not denied is allowed. The zero value allows everything.
type IPPolicy struct {
	Allowed []netip.Prefix
	Denied  []netip.Prefix
	Missing MissingPolicy
}

// Active reports whether the policy can refuse anything.
func (p IPPolicy) Active() bool {
	return len(p.Allowed) > 0 || len(p.Denied) > 0 || p.Missing == MissingDeny
}

// Check decides for the client address raw (as the proxy put it in True-Client-Ip). An empty or unreadable
// address counts as missing: it follows the Missing policy.
func (p IPPolicy) Check(raw string) IPVerdict {
	addr, ok := ParseAddr(raw)
	if !ok {
		if p.Missing == MissingDeny {
			return IPMissing
		}
		return IPAllowed
	}
	for _, r := range p.Denied {
		if r.Contains(addr) {
			return IPDenied
		}
	}
	if len(p.Allowed) == 0 {
		return IPAllowed
	}
	for _, r := range p.Allowed {
		if r.Contains(addr) {
			return IPAllowed
		}
	}
	return IPDenied
}

// ParseAddr reads one client address: IPv4, IPv6 (with or without brackets), an IPv6 zone is dropped, and
// an IPv4-mapped IPv6 address (::ffff:192.0.2.1) becomes the IPv4 address, so that IPv4 ranges match it.
func ParseAddr(raw string) (netip.Addr, bool) {
	s := strings.TrimSpace(raw)
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	if s == "" || len(s) > 64 {
		return netip.Addr{}, false
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return addr.WithZone("").Unmap(), true
}

// ParseRanges reads a list of CIDR ranges separated by commas and/or white space. A bare address is a
// range of one (/32 or /128). Host bits are cleared (10.1.2.3/8 is 10.0.0.0/8), and an IPv4-mapped IPv6
// range (::ffff:10.0.0.0/104) becomes the IPv4 range, because addresses are matched unmapped.
func ParseRanges(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range splitList(s) {
		p, err := parseRange(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func parseRange(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		addr, ok := ParseAddr(s)
		if !ok {
			return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR range", s)
		}
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR range (such as 192.0.2.0/24 or 2001:db8::/32)", s)
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped range needs at least 96 bits", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// splitList splits on commas and white space and drops empty fields.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
}
