package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kratos-hooks/kratos-hooks/gating"
	"github.com/kratos-hooks/kratos-hooks/hooks"
	"github.com/kratos-hooks/kratos-hooks/invites"
)

// Registration modes.
const (
	modeOpen   = "open"
	modeInvite = "invite"
)

// GatingConfig is who may register and log in, and the invites admin API. Part of serveConfig.
type GatingConfig struct {
	RegistrationMode string `env:"REGISTRATION_MODE" envDefault:"open"`

	AllowedIPRanges string `env:"ALLOWED_IP_RANGES"`
	DeniedIPRanges  string `env:"DENIED_IP_RANGES"`
	IPMissingPolicy string `env:"IP_MISSING_POLICY" envDefault:"allow"`

	AllowedEmailDomains     string `env:"ALLOWED_EMAIL_DOMAINS"`
	AllowedEmailDomainsFile string `env:"ALLOWED_EMAIL_DOMAINS_FILE"`
	DeniedEmailDomains      string `env:"DENIED_EMAIL_DOMAINS"`
	DeniedEmailDomainsFile  string `env:"DENIED_EMAIL_DOMAINS_FILE"`

	InviteReservationTimeout time.Duration `env:"INVITE_RESERVATION_TIMEOUT" envDefault:"15m"`
	InviteGuessLimit         int           `env:"INVITE_GUESS_LIMIT" envDefault:"10"`
	InviteGuessWindow        time.Duration `env:"INVITE_GUESS_WINDOW" envDefault:"15m"`

	// gating is the parsed result, set by validate.
	gating hooks.Gating
}

// validate parses and checks the gating settings (reading the domain list files) and keeps the result.
func (c *GatingConfig) validate() []error {
	var errs []error
	g := hooks.Gating{GuessLimit: invites.GuessLimit{Max: c.InviteGuessLimit, Window: c.InviteGuessWindow}}

	switch mode := strings.ToLower(strings.TrimSpace(c.RegistrationMode)); mode {
	case modeOpen, modeInvite:
		g.InviteOnly = mode == modeInvite
	default:
		errs = append(errs, fmt.Errorf("REGISTRATION_MODE %q: want open or invite", c.RegistrationMode))
	}

	var err error
	if g.IP.Allowed, err = gating.ParseRanges(c.AllowedIPRanges); err != nil {
		errs = append(errs, fmt.Errorf("ALLOWED_IP_RANGES: %w", err))
	}
	if g.IP.Denied, err = gating.ParseRanges(c.DeniedIPRanges); err != nil {
		errs = append(errs, fmt.Errorf("DENIED_IP_RANGES: %w", err))
	}
	if g.IP.Missing, err = gating.ParseMissingPolicy(c.IPMissingPolicy); err != nil {
		errs = append(errs, fmt.Errorf("IP_MISSING_POLICY: %w", err))
	}

	if g.Domains.Allowed, err = domainList("ALLOWED_EMAIL_DOMAINS", c.AllowedEmailDomains, c.AllowedEmailDomainsFile); err != nil {
		errs = append(errs, err)
	}
	if g.Domains.Denied, err = domainList("DENIED_EMAIL_DOMAINS", c.DeniedEmailDomains, c.DeniedEmailDomainsFile); err != nil {
		errs = append(errs, err)
	}

	if c.InviteReservationTimeout <= 0 {
		errs = append(errs, fmt.Errorf("INVITE_RESERVATION_TIMEOUT must be positive, got %s", c.InviteReservationTimeout))
	}
	if c.InviteGuessLimit < 1 {
		errs = append(errs, fmt.Errorf("INVITE_GUESS_LIMIT must be at least 1, got %d", c.InviteGuessLimit))
	}
	if c.InviteGuessWindow <= 0 {
		errs = append(errs, fmt.Errorf("INVITE_GUESS_WINDOW must be positive, got %s", c.InviteGuessWindow))
	}
	c.gating = g
	return errs
}

// domainList reads the patterns of a variable and of its _FILE variable together.
func domainList(name, list, file string) (gating.DomainSet, error) {
	set, err := gating.ParseDomains(list)
	if err != nil {
		return gating.DomainSet{}, fmt.Errorf("%s: %w", name, err)
	}
	if file == "" {
		return set, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return gating.DomainSet{}, fmt.Errorf("%s_FILE: %w", name, err)
	}
	defer f.Close()
	if err := gating.ReadDomains(&set, f); err != nil {
		return gating.DomainSet{}, fmt.Errorf("%s_FILE %s: %w", name, file, err)
	}
	return set, nil
}
