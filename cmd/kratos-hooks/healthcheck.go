package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func newHealthcheckCmd(e *environment) *cobra.Command {
	var url string
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 if the local serve process is ready, 1 if not (for container health checks)",
		Long: `Ask the serve process on LISTEN_ADDR (or --url) for /health/ready and exit 0 when it answers 200.
Container images without a shell or curl use it as their health check.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				addr := e.getenv("LISTEN_ADDR")
				if addr == "" {
					addr = ":8080"
				}
				host, port, err := net.SplitHostPort(addr)
				if err != nil {
					return fmt.Errorf("LISTEN_ADDR %q: %w", addr, err)
				}
				if host == "" || host == "0.0.0.0" || host == "::" {
					host = "127.0.0.1"
				}
				url = "http://" + net.JoinHostPort(host, port) + "/health/ready"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("not ready: %w", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("not ready: %s answered %d", url, resp.StatusCode)
			}
			fmt.Fprintln(e.stdout, "ready")
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "readiness URL to ask (default: /health/ready on LISTEN_ADDR)")
	return cmd
}
