package invites

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// codeBytes is the randomness in a code: 160 bits, well over the 128 needed to make guessing hopeless even
// without the guess limiter, and enough that a plain SHA-256 of the code cannot be reversed by trying codes.
const codeBytes = 20

// codeLen is the length of a normalised code: 160 bits in base32, no padding.
const codeLen = codeBytes * 8 / 5

// maxCodeInput caps what is looked at of a code a client sends.
const maxCodeInput = 128

var codeEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newCode makes a code, grouped for reading (ABCD-EFGH-…), and the hash that is stored instead of it.
func newCode() (code string, hash []byte) {
	var b [codeBytes]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics rather than return short)
	plain := codeEncoding.EncodeToString(b[:])
	var sb strings.Builder
	for i := 0; i < len(plain); i += 4 {
		if i > 0 {
			sb.WriteByte('-')
		}
		sb.WriteString(plain[i:min(i+4, len(plain))])
	}
	return sb.String(), hashCode(plain)
}

// normalizeCode turns a code as a person may type or paste it (any letter case, with or without the
// hyphens, with spaces) into the form that is hashed. ok is false when it cannot be a code.
func normalizeCode(s string) (string, bool) {
	if len(s) > maxCodeInput {
		return "", false
	}
	var sb strings.Builder
	for _, r := range s {
		switch {
		case r == '-' || r == ' ' || r == '\t':
		case r >= 'a' && r <= 'z':
			sb.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z' || r >= '2' && r <= '7':
			sb.WriteRune(r)
		default:
			return "", false
		}
	}
	if sb.Len() != codeLen {
		return "", false
	}
	return sb.String(), true
}

func hashCode(normalized string) []byte {
	h := sha256.Sum256([]byte(normalized))
	return h[:]
}
