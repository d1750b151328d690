package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kratos-hooks/kratos-hooks/internal/logging"
	"github.com/kratos-hooks/kratos-hooks/migrations"
)

func newMigrateCmd(e *environment) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply River's and this project's database migrations, and create the search index",
		Long: `Apply River's migrations and this project's to DATABASE_URL. Safe to run again (it applies nothing)
and safe to run from several processes at once (they take turns).

When ELASTICSEARCH_URL is set, also create the search index <ELASTICSEARCH_INDEX>-v1 and its alias
ELASTICSEARCH_INDEX if the alias does not exist yet. An existing index is left alone; a newer mapping is
applied by 'kratos-hooks reindex'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg struct {
				LogConfig
				DBConfig
				ElasticsearchConfig
			}
			if err := loadConfig(&cfg, e.getenv); err != nil {
				return err
			}
			logger, err := logging.New(e.stderr, cfg.LogFormat, cfg.LogLevel)
			if err != nil {
				return fmt.Errorf("LOG_LEVEL/LOG_FORMAT: %w", err)
			}
			index, err := cfg.ElasticsearchConfig.open()
			if err != nil {
				return err
			}
			pool, err := newPool(cmd.Context(), cfg.DatabaseURL, 2, "kratos-hooks-migrate")
			if err != nil {
				return err
			}
			defer pool.Close()
			res, err := migrations.Up(cmd.Context(), pool, logger)
			if err != nil {
				return err
			}
			if len(res.River) == 0 && len(res.Ours) == 0 {
				fmt.Fprintln(e.stdout, "database is up to date: nothing to apply")
			}
			if len(res.River) > 0 {
				fmt.Fprintf(e.stdout, "applied River migrations: %s\n", strings.Trim(fmt.Sprint(res.River), "[]"))
			}
			if len(res.Ours) > 0 {
				fmt.Fprintf(e.stdout, "applied migrations: %s\n", strings.Join(res.Ours, ", "))
			}
			if index != nil {
				defer func() { _ = index.Close(context.WithoutCancel(cmd.Context())) }()
				msg, err := ensureIndex(cmd.Context(), index)
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, msg)
			}
			return nil
		},
	}
}
