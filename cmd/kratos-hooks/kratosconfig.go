package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kratos-hooks/kratos-hooks/jsonnet"
	"github.com/kratos-hooks/kratos-hooks/kratos"
)

func newKratosConfigCmd(e *environment) *cobra.Command {
	var templatePath, schemaPath, bodyPath, smsBodyPath, outPath string
	cmd := &cobra.Command{
		Use:   "kratos-config",
		Short: "Write the Kratos configuration wired to this service",
		Long: `Write kratos/kratos.yml (or --template) with its placeholders filled, for 'kratos serve -c'.

Kratos cannot read per-hook secrets from environment variables, so this fills them in:
  KRATOS_HOOKS_URL       where Kratos reaches kratos-hooks (required), e.g. http://kratos-hooks:8080
  KRATOS_HOOKS_API_KEY   the key Kratos sends; defaults to the first HOOKS_API_KEY
  KRATOS_SMS_URL         where Kratos's courier sends SMS; defaults to KRATOS_HOOKS_URL/dev/sms, the
                         development sink (DEV_SMS_SINK=true); for a provider, change it and --sms-body
  KRATOS_SMS_AUTHORIZATION
                         the Authorization header sent to KRATOS_SMS_URL (e.g. "Basic ..."); required
                         with it, as the hooks key goes to the development sink only
The identity schema and the webhook body (jsonnet/webhook.jsonnet) are inlined as base64:// URLs unless
--identity-schema or --webhook-body name files to inline instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tmpl, schema, body, smsBody := kratos.ConfigTemplate, kratos.IdentitySchema, jsonnet.WebhookTemplate, jsonnet.SMSTemplate
			for _, f := range []struct {
				path string
				dst  *[]byte
			}{{templatePath, &tmpl}, {schemaPath, &schema}, {bodyPath, &body}, {smsBodyPath, &smsBody}} {
				if f.path == "" {
					continue
				}
				b, err := os.ReadFile(f.path)
				if err != nil {
					return err
				}
				*f.dst = b
			}
			key := e.getenv("KRATOS_HOOKS_API_KEY")
			if key == "" {
				key, _, _ = strings.Cut(e.getenv("HOOKS_API_KEY"), ",")
			}
			hooksURL := strings.TrimRight(e.getenv("KRATOS_HOOKS_URL"), "/")
			if hooksURL == "" {
				return fmt.Errorf("KRATOS_HOOKS_URL is not set: where does Kratos reach kratos-hooks? (e.g. http://127.0.0.1:8080)")
			}
			if strings.TrimSpace(key) == "" {
				return fmt.Errorf("KRATOS_HOOKS_API_KEY (or HOOKS_API_KEY) is not set: Kratos must send one of the service's keys")
			}
			out, err := kratos.RenderConfig(tmpl, kratos.ConfigVars{
				HooksURL: hooksURL, APIKey: strings.TrimSpace(key),
				IdentitySchema: schema, WebhookBody: body, SMSBody: smsBody,
				SMSURL: e.getenv("KRATOS_SMS_URL"), SMSAuthorization: e.getenv("KRATOS_SMS_AUTHORIZATION"),
			}.Map())
			if err != nil {
				return err
			}
			if outPath == "" {
				_, err = e.stdout.Write(out)
				return err
			}
			// The file holds the API key: readable by its owner only.
			return os.WriteFile(outPath, out, 0o600)
		},
	}
	cmd.Flags().StringVar(&templatePath, "template", "", "configuration template to fill instead of the shipped kratos/kratos.yml")
	cmd.Flags().StringVar(&schemaPath, "identity-schema", "", "identity schema to inline instead of the shipped one")
	cmd.Flags().StringVar(&bodyPath, "webhook-body", "", "webhook body template to inline instead of jsonnet/webhook.jsonnet")
	cmd.Flags().StringVar(&smsBodyPath, "sms-body", "", "SMS body template to inline instead of jsonnet/sms.jsonnet")
	cmd.Flags().StringVarP(&outPath, "output", "o", "", "write to this file (mode 0600) instead of stdout")
	return cmd
}
