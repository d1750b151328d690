package kratos

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func TestNextPageToken(t *testing.T) {
	next := "b9c50add-5f0b-4d6b-9c5c-6ae1d2f3a4b5"
	cases := map[string]struct {
		headers []string
		want    string
		wantErr bool
	}{
		"kratos v1.3.1, middle page": {headers: []string{`</admin/identities?page_size=2&page_token=00000000-0000-0000-0000-000000000000>; rel="first",</admin/identities?page_size=2&page_token=` + next + `>; rel="next"`}, want: next},
		"last page has no next":      {headers: []string{`</admin/identities?page_size=2&page_token=00000000-0000-0000-0000-000000000000>; rel="first"`}, want: ""},
		"no header":                  {headers: nil, want: ""},
		"spaces and unquoted rel":    {headers: []string{`</a?page_token=00000000-0000-0000-0000-000000000000>; rel=first , </a?page_token=` + next + `> ; rel=next`}, want: next},
		"separate header lines":      {headers: []string{`</a?page_token=00000000-0000-0000-0000-000000000000>; rel="first"`, `</a?page_token=` + next + `>; rel="next"`}, want: next},
		"comma inside the URL":       {headers: []string{`</a?x=1,2&page_token=` + next + `>; rel="next"`}, want: next},
		"absolute URL":               {headers: []string{`<http://kratos:4434/admin/identities?page_token=` + next + `>; rel="next"`}, want: next},
		"token is not a UUID":        {headers: []string{`</a?page_token=../../etc>; rel="next"`}, wantErr: true},
		"next without a token":       {headers: []string{`</a?page_size=2>; rel="next"`}, wantErr: true},
		"next without brackets":      {headers: []string{`/a?page_token=` + next + `; rel="next"`}, wantErr: true},
	}
	for name, c := range cases {
		got, err := NextPageToken(c.headers)
		if c.wantErr {
			require.Error(t, err, name)
			continue
		}
		require.NoError(t, err, name)
		require.Equal(t, c.want, got, name)
	}
}

// The pager sends back whatever this returns, so whatever Kratos (or a proxy) puts in the header, the
// result is either an error, nothing, or a UUID.
func FuzzNextPageToken(f *testing.F) {
	f.Add(`</admin/identities?page_size=2&page_token=00000000-0000-0000-0000-000000000000>; rel="first",</admin/identities?page_size=2&page_token=b9c50add-5f0b-4d6b-9c5c-6ae1d2f3a4b5>; rel="next"`)
	f.Add(`<>; rel="next"`)
	f.Add(`<<>>;;rel=next,`)
	f.Fuzz(func(t *testing.T, header string) {
		token, err := NextPageToken([]string{header})
		if err != nil || token == "" {
			return
		}
		if _, perr := uuid.Parse(token); perr != nil {
			t.Fatalf("token %q is not a UUID", token)
		}
	})
}
