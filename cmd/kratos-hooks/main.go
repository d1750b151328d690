// Command kratos-hooks is the webhook receiver that keeps a profiles table and a search index in step with
// Ory Kratos. See the README for what each subcommand does.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		var usage *usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		var coded interface{ ExitCode() int }
		if errors.As(err, &coded) {
			os.Exit(coded.ExitCode())
		}
		os.Exit(1)
	}
}

// environment is what every subcommand gets from run instead of reaching for globals.
type environment struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

// run is the whole program: main only wires it to the process. Tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	e := &environment{getenv: getenv, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "kratos-hooks",
		Short: "Webhook receiver that keeps profiles and a search index in step with Ory Kratos",
		Long: `kratos-hooks receives Ory Kratos web_hook calls, records each identity event in a durable
River job queue, and keeps a Postgres profiles table (and an Elasticsearch index) in step with Kratos.

Configuration comes from the environment; see the README for every variable.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.AddCommand(
		newServeCmd(e),
		newMigrateCmd(e),
		newReindexCmd(e),
		newKratosConfigCmd(e),
		newMappingCmd(e),
		newHealthcheckCmd(e),
		newReconcileCmd(e),
		newInvitesCmd(e),
	)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd, err: err}
	})
	root.CompletionOptions.DisableDefaultCmd = true

	cmd, err := root.ExecuteContextC(ctx)
	if err != nil {
		var usage *usageError
		if !errors.As(err, &usage) && isUsage(err) {
			usage = &usageError{cmd: cmd, err: err}
			err = usage
		}
		if usage != nil {
			fmt.Fprintf(stderr, "kratos-hooks: %v\nUsage: %s\nRun '%s --help' for more.\n", usage.err, usage.cmd.UseLine(), usage.cmd.CommandPath())
		} else {
			fmt.Fprintf(stderr, "kratos-hooks: %v\n", err)
		}
	}
	return err
}

// usageError is a command line that could not be understood. It exits with status 2.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// isUsage recognises cobra's argument errors (unknown command, wrong number of arguments).
func isUsage(err error) bool {
	msg := err.Error()
	for _, prefix := range []string{"unknown command", "accepts ", "requires ", "invalid argument", "unknown flag", "unknown shorthand"} {
		if len(msg) >= len(prefix) && msg[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}
