package invites

import (
	"bytes"
	"strings"
	"testing"
)

func TestCode_AnySpellingOfACodeChecksTheSame(t *testing.T) {
	code, hash := newCode()
	for _, typed := range []string{code, strings.ToLower(code), strings.ReplaceAll(code, "-", ""), strings.ReplaceAll(code, "-", " ") + "\t"} {
		n, ok := normalizeCode(typed)
		if !ok || !bytes.Equal(hashCode(n), hash) {
			t.Fatalf("%q does not check as %q", typed, code)
		}
	}
	for _, wrong := range []string{"", code[:len(code)-1], code + "A", strings.Replace(code, code[:1], "1", 1), strings.Repeat("A", 200)} {
		if n, ok := normalizeCode(wrong); ok && bytes.Equal(hashCode(n), hash) {
			t.Fatalf("%q checks as the code", wrong)
		}
	}
}

// FuzzInviteCodeCheck: whatever a client sends as invite_code, the check never panics, accepts only the
// canonical 32-character base32 form (so one code has exactly one hash), and is idempotent; and a code it
// made itself always checks.
func FuzzInviteCodeCheck(f *testing.F) {
	code, _ := newCode()
	f.Add(code)
	f.Add(strings.ToLower(code))
	f.Add("ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567")
	f.Add("aaaa aaaa\taaaa-aaaa-aaaa-aaaa-aaaa-aaaa")
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, typed string) {
		n, ok := normalizeCode(typed)
		if !ok {
			return
		}
		if len(n) != codeLen || strings.Trim(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
			t.Fatalf("%q normalised to %q", typed, n)
		}
		again, ok := normalizeCode(n)
		if !ok || again != n {
			t.Fatalf("normalising %q again gave %q", n, again)
		}
		if _, err := codeEncoding.DecodeString(n); err != nil {
			t.Fatalf("%q is not a code this service could have made: %v", n, err)
		}
	})
}
