package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/kratos-hooks/kratos-hooks/internal/logging"
	"github.com/kratos-hooks/kratos-hooks/invites"
	"github.com/kratos-hooks/kratos-hooks/migrations"
)

func newInvitesCmd(e *environment) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "invites",
		Short: "Create, list and revoke the invites of invite-only registration",
		Long: `Manage the invites that admit registrations while REGISTRATION_MODE=invite. Reads DATABASE_URL.
The same operations are served over HTTP under /admin/invites (Authorization: Bearer <ADMIN_API_TOKEN>).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newInvitesCreateCmd(e), newInvitesListCmd(e), newInvitesRevokeCmd(e))
	return cmd
}

func newInvitesCreateCmd(e *environment) *cobra.Command {
	var opts invites.CreateOpts
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create (--email ADDRESS | --code) [--expires 72h] [--max-uses N] [--note TEXT] [--json]",
		Short: "Create an invite bound to an e-mail address, or one with a code",
		Long: `Create an invite. With --email, registering that address (in any letter case) needs no code. With
--code, whoever sends the printed code as transient_payload.invite_code is admitted. The code is shown
only now: only its hash is stored.

--json prints one line: {"id","code","email","expires_at","max_uses"} (code is null for an e-mail invite).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (opts.Email == "") == !opts.Code {
				return &usageError{cmd: cmd, err: errors.New("give exactly one of --email and --code")}
			}
			if opts.ExpiresIn <= 0 {
				return &usageError{cmd: cmd, err: fmt.Errorf("--expires %s: must be positive", opts.ExpiresIn)}
			}
			if opts.MaxUses < 1 {
				return &usageError{cmd: cmd, err: fmt.Errorf("--max-uses %d: must be at least 1", opts.MaxUses)}
			}
			return withInviteDB(cmd.Context(), e, func(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
				c, err := invites.Create(ctx, pool, opts, time.Now())
				var input *invites.InputError
				if errors.As(err, &input) {
					return &usageError{cmd: cmd, err: input}
				}
				if err != nil {
					return err
				}
				logger.InfoContext(ctx, "invite created", "invite_id", c.ID.String(), "kind", c.Kind(), "max_uses", c.MaxUses)
				if asJSON {
					return json.NewEncoder(e.stdout).Encode(c.Summary())
				}
				fmt.Fprintf(e.stdout, "Created invite %s: %s, up to %d use(s), expires %s.\n",
					c.ID, describe(c.Invite), c.MaxUses, c.ExpiresAt.Format(time.RFC3339))
				if c.Code != "" {
					fmt.Fprintf(e.stdout, "Code: %s\nThe code is shown only now: only its hash is stored.\n", c.Code)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&opts.Email, "email", "", "bind the invite to this e-mail address")
	cmd.Flags().BoolVar(&opts.Code, "code", false, "make a code invite and print the code")
	cmd.Flags().DurationVar(&opts.ExpiresIn, "expires", invites.DefaultExpiresIn, "how long the invite is valid")
	cmd.Flags().IntVar(&opts.MaxUses, "max-uses", invites.DefaultMaxUses, "how many registrations it admits")
	cmd.Flags().StringVar(&opts.Note, "note", "", "a note for whoever lists the invites")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one line of JSON")
	return cmd
}

func newInvitesListCmd(e *environment) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List every invite, newest first (never with its code)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withInviteDB(cmd.Context(), e, func(ctx context.Context, pool *pgxpool.Pool, _ *slog.Logger) error {
				list, err := invites.List(ctx, pool)
				if err != nil {
					return err
				}
				now := time.Now()
				reports := make([]invites.Report, len(list))
				for i, inv := range list {
					reports[i] = inv.Report(now)
				}
				if asJSON {
					return json.NewEncoder(e.stdout).Encode(reports)
				}
				w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tINVITE\tUSES\tSTATUS\tEXPIRES\tNOTE")
				for _, r := range reports {
					fmt.Fprintf(w, "%s\t%s\t%d/%d\t%s\t%s\t%s\n", r.ID, describe(r.Invite), r.Uses, r.MaxUses, r.Status,
						r.ExpiresAt.Format(time.RFC3339), strings.ReplaceAll(r.Note, "\t", " "))
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

func newInvitesRevokeCmd(e *environment) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an invite: it admits no more registrations (those it admitted stay)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := uuid.Parse(args[0])
			if err != nil {
				return &usageError{cmd: cmd, err: fmt.Errorf("%q is not an invite id (a UUID)", args[0])}
			}
			return withInviteDB(cmd.Context(), e, func(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
				inv, err := invites.Revoke(ctx, pool, id, time.Now())
				if errors.Is(err, invites.ErrNotFound) {
					return fmt.Errorf("no invite %s", id)
				}
				if err != nil {
					return err
				}
				logger.InfoContext(ctx, "invite revoked", "invite_id", inv.ID.String())
				fmt.Fprintf(e.stdout, "Revoked invite %s (%s, %d of %d use(s) taken).\n", inv.ID, describe(inv), inv.Uses, inv.MaxUses)
				return nil
			})
		},
	}
}

// withInviteDB runs f with a small pool on DATABASE_URL, once the schema is known to be migrated.
func withInviteDB(ctx context.Context, e *environment, f func(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error) error {
	var cfg struct {
		LogConfig
		DBConfig
	}
	if err := loadConfig(&cfg, e.getenv); err != nil {
		return err
	}
	logger, err := logging.New(e.stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return fmt.Errorf("LOG_LEVEL/LOG_FORMAT: %w", err)
	}
	pool, err := newPool(ctx, cfg.DatabaseURL, 2, "kratos-hooks-invites")
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrations.Check(ctx, pool); err != nil {
		return fmt.Errorf("database not ready: %w", err)
	}
	return f(ctx, pool, logger)
}

// describe says what an invite admits, for people.
func describe(inv invites.Invite) string {
	if inv.Email != nil {
		return "for " + *inv.Email
	}
	return "code"
}
