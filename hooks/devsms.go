package hooks

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// SMSSink is the development SMS sink (DEV_SMS_SINK=true): Kratos's courier posts its SMS here (the body is
// jsonnet/sms.jsonnet), and GET /dev/sms shows the last messages per number, so phone registration,
// verification and SMS login work without an SMS provider. It keeps messages in memory, in this process
// only: it is for a laptop or a test, never for production.
type SMSSink struct {
	mu       sync.Mutex
	byNumber map[string][]SMS
	order    []string // numbers, least recently written first
}

// SMS is one message the courier sent.
type SMS struct {
	To       string    `json:"to"`
	Body     string    `json:"body"`
	Template string    `json:"template,omitempty"`
	Code     string    `json:"code,omitempty"`
	At       time.Time `json:"at"`
}

// The sink stays small whatever arrives.
const (
	smsPerNumber = 10
	smsNumbers   = 1000
)

// NewSMSSink returns an empty sink.
func NewSMSSink() *SMSSink { return &SMSSink{byNumber: map[string][]SMS{}} }

func (s *SMSSink) add(m SMS) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, seen := s.byNumber[m.To]; seen {
		for i, n := range s.order {
			if n == m.To {
				s.order = append(s.order[:i], s.order[i+1:]...)
				break
			}
		}
	} else if len(s.order) >= smsNumbers {
		delete(s.byNumber, s.order[0])
		s.order = s.order[1:]
	}
	s.order = append(s.order, m.To)
	msgs := append(s.byNumber[m.To], m)
	if len(msgs) > smsPerNumber {
		msgs = msgs[len(msgs)-smsPerNumber:]
	}
	s.byNumber[m.To] = msgs
}

// messages returns the messages to one number (newest last), or to every number.
func (s *SMSSink) messages(to string) map[string][]SMS {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]SMS{}
	for number, msgs := range s.byNumber {
		if to == "" || number == to {
			out[number] = append([]SMS(nil), msgs...)
		}
	}
	return out
}

type smsRequest struct {
	To       string  `json:"to"`
	Body     string  `json:"body"`
	Template string  `json:"template"`
	Code     *string `json:"code"`
}

func handleReceiveSMS(sink *SMSSink, now func() time.Time) echo.HandlerFunc {
	return func(c echo.Context) error {
		body, err := readBody(c)
		if err != nil {
			return err
		}
		var req smsRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return badRequest("body must be the JSON object jsonnet/sms.jsonnet makes: " + jsonErrorText(err))
		}
		req.To = strings.TrimSpace(req.To)
		if req.To == "" || len(req.To) > 64 {
			return badRequest(`"to" must be a phone number`)
		}
		if len(req.Body) > 2000 {
			return badRequest(`"body" is longer than 2,000 characters`)
		}
		m := SMS{To: req.To, Body: req.Body, Template: req.Template, At: now()}
		if req.Code != nil {
			m.Code = *req.Code
		}
		sink.add(m)
		return c.NoContent(http.StatusNoContent)
	}
}

func handleListSMS(sink *SMSSink) echo.HandlerFunc {
	return func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]any{"messages": sink.messages(strings.TrimSpace(c.QueryParam("to")))})
	}
}
