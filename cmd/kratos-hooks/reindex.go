package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kratos-hooks/kratos-hooks/internal/logging"
	"github.com/kratos-hooks/kratos-hooks/migrations"
	profilesync "github.com/kratos-hooks/kratos-hooks/sync"
)

func newReindexCmd(e *environment) *cobra.Command {
	var deleteOld bool
	cmd := &cobra.Command{
		Use:   "reindex",
		Short: "Rebuild the search index from Postgres into a new versioned index and move the alias to it",
		Long: `Create <ELASTICSEARCH_INDEX>-v<N+1> with this release's mapping, fill it from the profiles table, and
point the alias ELASTICSEARCH_INDEX at it in one atomic step. Searches and the running index workers use the
alias throughout and see no gap; changes made while the new index fills are written again after the alias
moves. Run it after an upgrade that changes the mapping, or to rebuild an index from scratch.

The previous index is kept (point the alias back to roll back) unless --delete-old is given.`,
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
			if index == nil {
				return errors.New("ELASTICSEARCH_URL is not set: there is no search index to rebuild")
			}
			defer func() { _ = index.Close(context.WithoutCancel(cmd.Context())) }()
			pool, err := newPool(cmd.Context(), cfg.DatabaseURL, 4, "kratos-hooks-reindex")
			if err != nil {
				return err
			}
			defer pool.Close()
			if err := migrations.Check(cmd.Context(), pool); err != nil {
				return fmt.Errorf("database not ready: %w", err)
			}

			res, err := profilesync.Reindex(cmd.Context(), pool, index, logger)
			if err != nil {
				return fmt.Errorf("reindex: %w", err)
			}
			previous := "nothing"
			if len(res.Previous) > 0 {
				previous = strings.Join(res.Previous, ", ")
			}
			fmt.Fprintf(e.stdout, "indexed %d profiles into %s; alias %s now points at it (before: %s); %d changes made meanwhile written again\n",
				res.Documents, res.Index, index.Alias(), previous, res.CaughtUp)
			if deleteOld {
				for _, old := range res.Previous {
					if err := index.DeleteIndex(cmd.Context(), old); err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "deleted %s\n", old)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&deleteOld, "delete-old", false, "delete the indices the alias pointed at before")
	return cmd
}
