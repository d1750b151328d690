package hooks

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSMSSink_KeepsTheLastMessagesPerNumberBehindTheRightTokens(t *testing.T) {
	sink := NewSMSSink()
	e := New(Opts{Hooks: true, APIKeys: []string{"hooks-key-0123456789"}, AdminAPITokens: []string{"admin-token-0123456789"}, SMSSink: sink})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	call := func(method, path, token, body string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}

	require.Equal(t, http.StatusUnauthorized, call(http.MethodPost, "/dev/sms", "", `{"to":"+1","body":"x"}`))
	require.Equal(t, http.StatusUnauthorized, call(http.MethodPost, "/dev/sms", "admin-token-0123456789", `{"to":"+1","body":"x"}`))
	require.Equal(t, http.StatusBadRequest, call(http.MethodPost, "/dev/sms", "hooks-key-0123456789", `{"body":"no number"}`))
	require.Equal(t, http.StatusBadRequest, call(http.MethodPost, "/dev/sms", "hooks-key-0123456789", `not json`))
	for i := range smsPerNumber + 5 {
		require.Equal(t, http.StatusNoContent, call(http.MethodPost, "/dev/sms", "hooks-key-0123456789",
			fmt.Sprintf(`{"to":"+4915112345678","body":"Your code is %06d","template":"login_code_valid","code":"%06d"}`, i, i)))
	}
	require.Equal(t, http.StatusUnauthorized, call(http.MethodGet, "/dev/sms", "hooks-key-0123456789", ""), "Kratos's key cannot read codes")
	require.Equal(t, http.StatusOK, call(http.MethodGet, "/dev/sms", "admin-token-0123456789", ""))

	msgs := sink.messages("+4915112345678")["+4915112345678"]
	require.Len(t, msgs, smsPerNumber)
	require.Equal(t, fmt.Sprintf("%06d", smsPerNumber+4), msgs[len(msgs)-1].Code)

	for i := range smsNumbers + 1 {
		sink.add(SMS{To: fmt.Sprintf("+1%010d", i), At: time.Now()})
	}
	require.Len(t, sink.messages(""), smsNumbers, "the sink stays bounded")
}
