package gating_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kratos-hooks/kratos-hooks/gating"
)

func mustDomains(t *testing.T, s string) gating.DomainSet {
	t.Helper()
	d, err := gating.ParseDomains(s)
	require.NoError(t, err)
	return d
}

func TestDomainPolicy_Check(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allowed string
		denied  string
		email   string
		want    gating.DomainVerdict
	}{
		{name: "no lists allow everything", email: "a@example.com", want: gating.DomainAllowed},
		{name: "exact deny", denied: "mailinator.com", email: "a@mailinator.com", want: gating.DomainDenied},
		{name: "deny ignores letter case", denied: "Mailinator.COM", email: "a@MAILINATOR.com", want: gating.DomainDenied},
		{name: "exact deny leaves subdomains", denied: "example.com", email: "a@sub.example.com", want: gating.DomainAllowed},
		{name: "exact deny is not a suffix match", denied: "example.com", email: "a@badexample.com", want: gating.DomainAllowed},
		{name: "subdomain pattern denies a subdomain", denied: "*.example.com", email: "a@sub.example.com", want: gating.DomainDenied},
		{name: "subdomain pattern denies a deep subdomain", denied: "*.example.com", email: "a@x.y.example.com", want: gating.DomainDenied},
		{name: "subdomain pattern leaves the domain itself", denied: "*.example.com", email: "a@example.com", want: gating.DomainAllowed},
		{name: "subdomain pattern is label-aligned", denied: "*.example.com", email: "a@notexample.com", want: gating.DomainAllowed},
		{name: "allow list admits a listed domain", allowed: "corp.example", email: "a@corp.example", want: gating.DomainAllowed},
		{name: "allow list refuses others", allowed: "corp.example", email: "a@gmail.com", want: gating.DomainNotAllowed},
		{name: "allow list by subdomain pattern", allowed: "*.corp.example", email: "a@eu.corp.example", want: gating.DomainAllowed},
		{name: "deny wins over allow", allowed: "*.corp.example", denied: "contractors.corp.example", email: "a@contractors.corp.example", want: gating.DomainDenied},
		{name: "trailing dot", denied: "example.com", email: "a@example.com.", want: gating.DomainDenied},
		{name: "the last @ counts", denied: "example.com", email: `"a@b"@example.com`, want: gating.DomainDenied},
		{name: "leading @ in a pattern", denied: "@example.com", email: "a@example.com", want: gating.DomainDenied},
		{name: "unicode domain matches its punycode entry", denied: "xn--bcher-kva.example", email: "a@Bücher.example", want: gating.DomainDenied},
		{name: "punycode domain matches its unicode entry", denied: "bücher.example", email: "a@xn--bcher-kva.example", want: gating.DomainDenied},
		{name: "an ideographic full stop is a dot", denied: "example.com", email: "a@example。com", want: gating.DomainDenied},
		{name: "unreadable domain is refused by an active policy", denied: "example.com", email: "a@[192.0.2.1]", want: gating.DomainNotAllowed},
		{name: "no domain is refused by an active policy", denied: "example.com", email: "nobody", want: gating.DomainNotAllowed},
		{name: "unreadable domain passes with no policy", email: "a@[192.0.2.1]", want: gating.DomainAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := gating.DomainPolicy{Allowed: mustDomains(t, tt.allowed), Denied: mustDomains(t, tt.denied)}
			got, _ := p.Check(tt.email)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestDomainPolicy_ReportsTheDomain(t *testing.T) {
	t.Parallel()
	p := gating.DomainPolicy{Denied: mustDomains(t, "*.example.com")}
	v, d := p.Check("A@Sub.Example.COM")
	require.Equal(t, gating.DomainDenied, v)
	require.Equal(t, "sub.example.com", d)
}

func TestParseDomains_RefusesWhatIsNotAPattern(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"*", "*.", "a.*.com", "exa%mple.com", "example..com", "http://example.com", "*example.com", "a@b@c"} {
		_, err := gating.ParseDomains(s)
		require.Error(t, err, s)
	}
}

func TestReadDomains_FileWithCommentsAndLongLists(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("# disposable mail providers\nmailinator.com\n\n  *.temp-mail.example  # and every subdomain\n")
	for i := range 20000 {
		b.WriteString("d")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(".")
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString("-list.example\n")
	}
	var set gating.DomainSet
	require.NoError(t, gating.ReadDomains(&set, strings.NewReader(b.String())))
	p := gating.DomainPolicy{Denied: set}
	for email, want := range map[string]gating.DomainVerdict{
		"a@mailinator.com":          gating.DomainDenied,
		"a@x.temp-mail.example":     gating.DomainDenied,
		"a@temp-mail.example":       gating.DomainAllowed,
		"a@dxxx.c-list.example":     gating.DomainDenied,
		"a@unrelated.example":       gating.DomainAllowed,
		"a@comment.example # not a": gating.DomainNotAllowed,
	} {
		got, _ := p.Check(email)
		require.Equal(t, want, got, email)
	}

	err := gating.ReadDomains(&set, strings.NewReader("ok.example\nnot a domain!\n"))
	require.ErrorContains(t, err, "line 2")
}

// FuzzDomainPolicy checks that no e-mail address or pattern makes the domain rules panic, and that a domain
// that parses as an exact pattern is matched by it.
func FuzzDomainPolicy(f *testing.F) {
	for _, s := range []string{"a@example.com", "a@Bücher.example", "@", "a@b@c", "a@[::1]", "x@*.com"} {
		f.Add(s, "example.com, *.example.org")
	}
	f.Fuzz(func(t *testing.T, email, patterns string) {
		set, err := gating.ParseDomains(patterns)
		if err == nil {
			_, _ = gating.DomainPolicy{Allowed: set, Denied: set}.Check(email)
		}
		d := gating.DomainOf(email)
		if d == "" {
			return
		}
		self, err := gating.ParseDomains(d)
		if err != nil {
			t.Fatalf("domain %q of %q does not parse as a pattern: %v", d, email, err)
		}
		if v, _ := (gating.DomainPolicy{Denied: self}).Check(email); v != gating.DomainDenied {
			t.Fatalf("%q not matched by its own domain %q", email, d)
		}
	})
}
