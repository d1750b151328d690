package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/kratos-hooks/kratos-hooks/gating"
	"github.com/kratos-hooks/kratos-hooks/invites"
)

// Gating decides who may register and log in.
type Gating struct {
	// IP is checked by the before hooks (registration and login) and again by the registration validate
	// hook, against the address the proxy in front of Kratos put in True-Client-Ip.
	IP gating.IPPolicy
	// Domains is checked for the e-mail address at registration and when it changes in settings.
	Domains gating.DomainPolicy
	// InviteOnly makes every registration need an invite (REGISTRATION_MODE=invite).
	InviteOnly bool
	// GuessLimit bounds failed invite-code checks per client; zero means invites.DefaultGuessLimit.
	GuessLimit invites.GuessLimit
}

// The ids of the messages the gating hooks put in Kratos's form. They are stable: a UI translates by them
// (the context carries the values to fill in). Kratos's own ids stay below 4900000.
const (
	MsgEmailDomainNotAllowed  = 4900101 // context: domain
	MsgInviteRequired         = 4900201
	MsgInviteCodeUnknown      = 4900202
	MsgInviteExpired          = 4900203 // context: expired_at (RFC 3339)
	MsgInviteUsedUp           = 4900204 // context: max_uses
	MsgInviteRevoked          = 4900205
	MsgInviteTooManyGuesses   = 4900206 // context: retry_after_seconds
	MsgRegistrationNetwork    = 4900301 // context: ip
	MsgLoginNetwork           = 4900302 // context: ip
	MsgNetworkUnknown         = 4900303
	MsgTemporarilyUnavailable = 4900901
)

// Where the messages go in Kratos's form.
const (
	ptrEmail = "#/traits/email"
	ptrForm  = "#/"
)

// flowKind names the flow a before hook gates.
type flowKind string

const (
	flowRegistration flowKind = "registration"
	flowLogin        flowKind = "login"
)

// handleIPGate is a before hook: it lets a flow start only from an allowed client address. Kratos shows a
// before hook's refusal only as a generic error page, so the message is for logs and API clients.
func handleIPGate(policy gating.IPPolicy, kind flowKind) echo.HandlerFunc {
	return func(c echo.Context) error {
		p, _, err := readPayload(c, decodeOpts{})
		if err != nil {
			return err
		}
		if err := checkIP(policy, p.Request.ClientIP, kind); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	}
}

// handleRegistrationValidate is the pre-persist registration hook (response.parse: true): it checks the
// client address, the e-mail domain and, in invite-only mode, the invite (reserving one of its uses for the
// flow). It answers 204 to let the registration go on, or a 4xx messages body that Kratos shows in its form.
func handleRegistrationValidate(g Gating, pool *pgxpool.Pool, dbTimeout time.Duration, now func() time.Time) echo.HandlerFunc {
	if g.GuessLimit == (invites.GuessLimit{}) {
		g.GuessLimit = invites.DefaultGuessLimit
	}
	return func(c echo.Context) error {
		p, _, err := readPayload(c, decodeOpts{preIdentity: true})
		if err != nil {
			return err
		}
		contact := readContact(p.Identity.Traits)

		if err := checkIP(g.IP, p.Request.ClientIP, flowRegistration); err != nil {
			return err
		}
		if contact.Email != "" {
			if err := checkDomain(g.Domains, contact.Email); err != nil {
				return err
			}
		}
		if !g.InviteOnly {
			return c.NoContent(http.StatusNoContent)
		}

		ctx, cancel := context.WithTimeout(c.Request().Context(), dbTimeout)
		defer cancel()
		_, err = invites.Admit(ctx, pool, invites.AdmitRequest{
			FlowID:    p.Flow.ID,
			Address:   invites.Address(contact.Email, contact.Phone),
			Email:     invites.NormalizeEmail(contact.Email),
			Code:      inviteCode(p.Flow.TransientPayload),
			ClientKey: invites.ClientKey(p.Request.ClientIP, p.Flow.ID),
		}, g.GuessLimit, now())
		var refused *invites.RefusedError
		if errors.As(err, &refused) {
			return inviteRefusal(refused, contact.Email != "")
		}
		if err != nil {
			return unavailableMessage(err)
		}
		return c.NoContent(http.StatusNoContent)
	}
}

// handleSettingsValidate is the pre-persist settings hook of the profile method (response.parse: true): an
// e-mail address may only change to one the domain rules allow, so that they cannot be side-stepped after
// registration. An address that did not change passes even if its domain has been denied since, so that
// such a user can still edit the rest of their profile.
func handleSettingsValidate(domains gating.DomainPolicy, pool *pgxpool.Pool, dbTimeout time.Duration) echo.HandlerFunc {
	return func(c echo.Context) error {
		p, _, err := readPayload(c, decodeOpts{identity: true})
		if err != nil {
			return err
		}
		email := readContact(p.Identity.Traits).Email
		if email == "" {
			return c.NoContent(http.StatusNoContent)
		}
		refusal := checkDomain(domains, email)
		if refusal == nil {
			return c.NoContent(http.StatusNoContent)
		}
		// The stored profile holds the address before this change. If it cannot be read, the change is
		// judged as new: refused.
		ctx, cancel := context.WithTimeout(c.Request().Context(), dbTimeout)
		defer cancel()
		var before *string
		err = pool.QueryRow(ctx, `SELECT traits->>'email' FROM profiles WHERE identity_id = $1 AND deleted_at IS NULL`,
			p.Identity.ID).Scan(&before)
		if err == nil && before != nil && invites.NormalizeEmail(*before) == invites.NormalizeEmail(email) {
			return c.NoContent(http.StatusNoContent)
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			refusal.Err = err
		}
		return refusal
	}
}

// contact is what the gating hooks read from an identity's traits.
type contact struct {
	Email string
	Phone string
}

// readContact reads the e-mail and phone traits; a trait that is missing or not a string reads as "".
func readContact(traits json.RawMessage) contact {
	var t map[string]json.RawMessage
	if json.Unmarshal(traits, &t) != nil {
		return contact{}
	}
	var c contact
	_ = json.Unmarshal(t["email"], &c.Email)
	_ = json.Unmarshal(t["phone"], &c.Phone)
	return c
}

// inviteCode reads transient_payload.invite_code. A value that is not a string is kept in its JSON form: it
// matches no invite and counts as a failed check, as a wrong string would.
func inviteCode(transient json.RawMessage) string {
	var tp map[string]json.RawMessage
	if json.Unmarshal(transient, &tp) != nil {
		return ""
	}
	raw, ok := tp["invite_code"]
	if !ok || string(raw) == "null" {
		return ""
	}
	var code string
	if json.Unmarshal(raw, &code) == nil {
		return code
	}
	return string(raw)
}

func checkIP(policy gating.IPPolicy, clientIP string, kind flowKind) *MessagesError {
	switch policy.Check(clientIP) {
	case gating.IPDenied:
		addr, _ := gating.ParseAddr(clientIP)
		ctx := map[string]any{"ip": addr.String()}
		if kind == flowLogin {
			return refuse(ptrForm, Message{ID: MsgLoginNetwork, Text: "Sign-in from your network is not allowed.", Context: ctx})
		}
		return refuse(ptrForm, Message{ID: MsgRegistrationNetwork, Text: "Registration from your network is not allowed.", Context: ctx})
	case gating.IPMissing:
		return refuse(ptrForm, Message{ID: MsgNetworkUnknown,
			Text: "Your network address could not be determined, so this request is not allowed."})
	}
	return nil
}

func checkDomain(policy gating.DomainPolicy, email string) *MessagesError {
	verdict, domain := policy.Check(email)
	if verdict == gating.DomainAllowed {
		return nil
	}
	text := "E-mail addresses at " + domain + " are not allowed."
	if domain == "" {
		text = "This e-mail address is not allowed."
	}
	return refuse(ptrEmail, Message{ID: MsgEmailDomainNotAllowed, Text: text, Context: map[string]any{"domain": domain}})
}

// inviteRefusal is the form message for a registration no invite admits: on the e-mail field when it is
// about the address, on the whole form when it is about the code (Kratos has no field for it).
func inviteRefusal(r *invites.RefusedError, hasEmail bool) *MessagesError {
	ptr := ptrForm
	if hasEmail && !r.ByCode {
		ptr = ptrEmail
	}
	var msg Message
	switch r.Reason {
	case invites.ReasonNoInvite:
		msg = Message{ID: MsgInviteRequired, Text: "Registration is by invitation only. Use the e-mail address you were invited at, or an invite code."}
	case invites.ReasonUnknownCode:
		msg = Message{ID: MsgInviteCodeUnknown, Text: "This invite code is not valid."}
	case invites.ReasonExpired:
		msg = Message{ID: MsgInviteExpired, Text: "This invite has expired.",
			Context: map[string]any{"expired_at": r.ExpiredAt.UTC().Format(time.RFC3339)}}
	case invites.ReasonUsedUp:
		msg = Message{ID: MsgInviteUsedUp, Text: "This invite has already been used.", Context: map[string]any{"max_uses": r.MaxUses}}
	case invites.ReasonRevoked:
		msg = Message{ID: MsgInviteRevoked, Text: "This invite has been withdrawn."}
	case invites.ReasonTooManyGuesses:
		secs := int((r.RetryAfter + time.Second - 1) / time.Second)
		msg = Message{ID: MsgInviteTooManyGuesses, Text: "Too many invalid invite codes. Please try again later.",
			Context: map[string]any{"retry_after_seconds": secs}}
	default:
		msg = Message{ID: MsgInviteRequired, Text: "Registration is by invitation only."}
	}
	return refuse(ptr, msg)
}

// unavailableMessage answers a validate hook whose database did not answer in time. It is a 4xx with a form
// message, not a 503: Kratos would retry a 503 for seconds and then show a blank error page. Here the person
// sees the message and can submit again (the reservation, if one was made, is keyed by flow and address, so
// that takes no second use).
func unavailableMessage(err error) *MessagesError {
	e := refuse(ptrForm, Message{ID: MsgTemporarilyUnavailable, Text: "Registration is temporarily unavailable. Please try again in a moment."})
	e.Status = http.StatusConflict
	e.Err = err
	return e
}
