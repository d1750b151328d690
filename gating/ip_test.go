package gating_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/gating"
)

func mustRanges(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	r, err := gating.ParseRanges(s)
	require.NoError(t, err)
	return r
}

func TestIPPolicy_Check(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allowed string
		denied  string
		missing gating.MissingPolicy
		addr    string
		want    gating.IPVerdict
	}{
		{name: "no lists allow everything", addr: "203.0.113.9", want: gating.IPAllowed},
		{name: "denied range", denied: "203.0.113.0/24", addr: "203.0.113.9", want: gating.IPDenied},
		{name: "first address of a denied range", denied: "203.0.113.0/24", addr: "203.0.113.0", want: gating.IPDenied},
		{name: "last address of a denied range", denied: "203.0.113.0/24", addr: "203.0.113.255", want: gating.IPDenied},
		{name: "just past a denied range", denied: "203.0.113.0/24", addr: "203.0.114.0", want: gating.IPAllowed},
		{name: "just before a denied range", denied: "203.0.113.0/24", addr: "203.0.112.255", want: gating.IPAllowed},
		{name: "outside the allow list", allowed: "10.0.0.0/8", addr: "11.0.0.1", want: gating.IPDenied},
		{name: "inside the allow list", allowed: "10.0.0.0/8, 192.168.0.0/16", addr: "192.168.4.4", want: gating.IPAllowed},
		{name: "deny wins over allow", allowed: "10.0.0.0/8", denied: "10.1.0.0/16", addr: "10.1.2.3", want: gating.IPDenied},
		{name: "allowed next to a denied hole", allowed: "10.0.0.0/8", denied: "10.1.0.0/16", addr: "10.2.0.1", want: gating.IPAllowed},
		{name: "a bare address is a /32", denied: "198.51.100.7", addr: "198.51.100.7", want: gating.IPDenied},
		{name: "a bare address matches only itself", denied: "198.51.100.7", addr: "198.51.100.8", want: gating.IPAllowed},
		{name: "host bits are cleared", denied: "10.1.2.3/8", addr: "10.200.0.1", want: gating.IPDenied},
		{name: "/0 denies every IPv4 address", denied: "0.0.0.0/0", addr: "1.1.1.1", want: gating.IPDenied},
		{name: "an IPv4 /0 does not match IPv6", denied: "0.0.0.0/0", addr: "2001:db8::1", want: gating.IPAllowed},

		{name: "IPv6 range", denied: "2001:db8::/32", addr: "2001:db8:ffff::1", want: gating.IPDenied},
		{name: "IPv6 just outside", denied: "2001:db8::/32", addr: "2001:db9::", want: gating.IPAllowed},
		{name: "IPv6 in brackets", denied: "2001:db8::/32", addr: "[2001:db8::5]", want: gating.IPDenied},
		{name: "IPv6 zone is ignored", denied: "fe80::/10", addr: "fe80::1%eth0", want: gating.IPDenied},
		{name: "IPv6 written in upper case", denied: "2001:db8::/32", addr: "2001:DB8::ABCD", want: gating.IPDenied},
		{name: "IPv6 /128 bare", denied: "::1", addr: "0:0:0:0:0:0:0:1", want: gating.IPDenied},
		{name: "IPv6 outside the allow list", allowed: "2001:db8::/32", addr: "2001:db9::1", want: gating.IPDenied},
		{name: "IPv4-mapped address matches an IPv4 range", denied: "192.0.2.0/24", addr: "::ffff:192.0.2.1", want: gating.IPDenied},
		{name: "IPv4-mapped range matches an IPv4 address", denied: "::ffff:192.0.2.0/120", addr: "192.0.2.77", want: gating.IPDenied},
		{name: "IPv4-mapped range leaves its neighbours", denied: "::ffff:192.0.2.0/120", addr: "192.0.3.1", want: gating.IPAllowed},
		{name: "an IPv6 allow list refuses IPv4", allowed: "2001:db8::/32", addr: "192.0.2.1", want: gating.IPDenied},

		{name: "missing address, policy allow", denied: "10.0.0.0/8", addr: "", want: gating.IPAllowed},
		{name: "missing address, policy deny", missing: gating.MissingDeny, addr: "", want: gating.IPMissing},
		{name: "unreadable address counts as missing (allow)", allowed: "10.0.0.0/8", addr: "not-an-ip", want: gating.IPAllowed},
		{name: "unreadable address counts as missing (deny)", missing: gating.MissingDeny, addr: "10.0.0.1:443", want: gating.IPMissing},
		{name: "a list of addresses is not an address", missing: gating.MissingDeny, addr: "10.0.0.1, 10.0.0.2", want: gating.IPMissing},
		{name: "white space around the address", denied: "10.0.0.0/8", addr: " 10.0.0.1 ", want: gating.IPDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := gating.IPPolicy{Allowed: mustRanges(t, tt.allowed), Denied: mustRanges(t, tt.denied), Missing: tt.missing}
			require.Equal(t, tt.want, p.Check(tt.addr))
		})
	}
}

func TestParseRanges_RefusesWhatIsNotARange(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"10.0.0.0/33", "2001:db8::/129", "10.0.0/8", "example.com", "10.0.0.0/-1", "::ffff:10.0.0.0/90", "1.2.3.4/8/8"} {
		_, err := gating.ParseRanges(s)
		require.Error(t, err, s)
		require.Contains(t, err.Error(), s)
	}
}

func TestParseRanges_Separators(t *testing.T) {
	t.Parallel()
	r := mustRanges(t, " 10.0.0.0/8,192.168.0.0/16\n2001:db8::/32 ,, ")
	require.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("2001:db8::/32"),
	}, r)
	require.Empty(t, mustRanges(t, ""))
}

func TestParseMissingPolicy(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]gating.MissingPolicy{"": gating.MissingAllow, "allow": gating.MissingAllow, "DENY": gating.MissingDeny} {
		got, err := gating.ParseMissingPolicy(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := gating.ParseMissingPolicy("block")
	require.Error(t, err)
}

// FuzzIPPolicy checks that any address and any range list either parse or are refused, never panic, and
// that a range always contains the address it was made from.
func FuzzIPPolicy(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "::ffff:1.2.3.4", "[2001:db8::1]", "fe80::1%eth0", "", "1.2.3.4/24", "::/0"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, addr, ranges string) {
		r, err := gating.ParseRanges(ranges)
		if err == nil {
			_ = gating.IPPolicy{Allowed: r, Denied: r}.Check(addr)
		}
		a, ok := gating.ParseAddr(addr)
		if !ok {
			return
		}
		self, err := gating.ParseRanges(a.String())
		if err != nil {
			t.Fatalf("the address %s does not parse as a range: %v", a, err)
		}
		if got := (gating.IPPolicy{Denied: self}).Check(addr); got != gating.IPDenied {
			t.Fatalf("%q not matched by its own range %v", addr, self)
		}
	})
}
