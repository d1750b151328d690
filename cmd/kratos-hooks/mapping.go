package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

// checkMapping tries a custom profile mapping on sample identities of every schema Kratos is configured
// with, so that a broken mapping stops the service at start, with the Jsonnet error and its position,
// instead of failing sync jobs one by one. When Kratos cannot be asked, it says so and goes on: the
// mapping still meets every identity, and a failure then fails that identity's job with the error.
func checkMapping(ctx context.Context, mapper *jsonnet.Mapper, custom bool, kratosClient *kratos.Client, logger *slog.Logger) error {
	if !custom {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	schemas, err := kratosClient.ListSchemas(ctx)
	if err != nil {
		logger.WarnContext(ctx, "PROFILE_MAPPING_FILE not tried on Kratos's identity schemas: could not read them", "error", err)
		return nil
	}
	for _, s := range schemas {
		samples, err := jsonnet.SampleIdentities(s.ID, s.Schema)
		if err != nil {
			logger.WarnContext(ctx, "cannot make sample identities for a schema", "schema_id", s.ID, "error", err)
			continue
		}
		if err := mapper.Check(samples); err != nil {
			return fmt.Errorf("PROFILE_MAPPING_FILE: %w", err)
		}
	}
	logger.InfoContext(ctx, "profile mapping checked on sample identities", "schemas", len(schemas))
	return nil
}

func newMappingCmd(e *environment) *cobra.Command {
	var schemaPath string
	cmd := &cobra.Command{
		Use:   "mapping [identity.json ...]",
		Short: "Show what the profile mapping makes of identities",
		Long: `Evaluate the profile mapping (PROFILE_MAPPING_FILE, or the built-in jsonnet/profile.jsonnet) on
identities and print one JSON line per identity with the fields it derives. Give identity files (as the Kratos
admin API returns them), or --schema with an identity schema to try the mapping on sample identities of it.
Use it while writing a mapping; serve checks the mapping the same way at start.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			mapper, err := loadMapper(e.getenv("PROFILE_MAPPING_FILE"))
			if err != nil {
				return err
			}
			var samples []jsonnet.Sample
			if schemaPath != "" {
				raw, err := os.ReadFile(schemaPath)
				if err != nil {
					return err
				}
				if samples, err = jsonnet.SampleIdentities(schemaPath, raw); err != nil {
					return err
				}
			}
			for _, path := range args {
				raw, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				samples = append(samples, jsonnet.Sample{Name: path, Identity: raw})
			}
			if len(samples) == 0 {
				return &usageError{cmd: cmd, err: errors.New("give identity files or --schema")}
			}
			var failed error
			for _, s := range samples {
				fields, err := mapper.Map(s.Identity)
				if err != nil {
					fmt.Fprintf(e.stderr, "%s: %v\n", s.Name, err)
					failed = errors.New("the mapping failed on some identities")
					continue
				}
				out, _ := json.Marshal(struct {
					Identity string         `json:"identity"`
					Fields   jsonnet.Fields `json:"fields"`
				}{s.Name, fields})
				fmt.Fprintln(e.stdout, string(out))
			}
			return failed
		},
	}
	cmd.Flags().StringVar(&schemaPath, "schema", "", "identity schema (JSON) to make sample identities from")
	return cmd
}
