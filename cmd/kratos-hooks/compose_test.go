package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// docker-compose.yml cannot run here (no Docker engine), so this checks what can be checked without one:
// the compose tool accepts the file, every long-running service is health-checked and started in order of
// health, and kratos-hooks accepts the environment the file gives it.
func TestDockerCompose_IsValidOrderedByHealthAndConfiguresTheService(t *testing.T) {
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatalf("docker-compose is not installed: the test command installs it (apt-get install docker-compose)")
	}
	out, err := exec.Command("docker-compose", "-f", filepath.Join("..", "..", "docker-compose.yml"), "config").CombinedOutput()
	require.NoError(t, err, string(out))

	var file struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Healthcheck *struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
			DependsOn map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
			Profiles []string `yaml:"profiles"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(out, &file))

	oneShot := map[string]bool{"kratos-config": true, "kratos-migrate": true, "kratos-hooks-migrate": true, "reconcile": true}
	for name, svc := range file.Services {
		if !oneShot[name] {
			require.NotNil(t, svc.Healthcheck, "%s has no health check", name)
		}
		for dep, cond := range svc.DependsOn {
			want := "service_healthy"
			if oneShot[dep] {
				want = "service_completed_successfully"
			}
			require.Equal(t, want, cond.Condition, "%s depends on %s", name, dep)
		}
	}
	for _, want := range []string{"postgres", "elasticsearch", "kratos", "kratos-migrate", "kratos-hooks", "kratos-hooks-migrate", "mailpit", "selfservice-ui", "reconcile"} {
		require.Contains(t, file.Services, want)
	}
	require.Equal(t, []string{"migrate"}, file.Services["kratos-hooks-migrate"].Command)
	require.Contains(t, file.Services["kratos-hooks"].DependsOn, "kratos-hooks-migrate")
	require.Contains(t, file.Services["kratos"].DependsOn, "kratos-migrate")

	// The service's environment passes the service's own configuration checks.
	env := file.Services["kratos-hooks"].Environment
	var cfg serveConfig
	require.NoError(t, loadConfig(&cfg, func(k string) string { return env[k] }))
	require.NoError(t, cfg.validate(roleAll))

	// The Kratos configuration the compose file renders is the shipped one, filled.
	render := file.Services["kratos-config"]
	dst := filepath.Join(t.TempDir(), "kratos.yml")
	_, stderr, err := runCLI(t, render.Environment, "kratos-config", "-o", dst)
	require.NoError(t, err, stderr)
	rendered, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.Contains(t, string(rendered), "url: http://kratos-hooks:8080/hooks/registration/after")
	require.Contains(t, string(rendered), `value: "Bearer change-me-hooks-api-key-0123456789"`)
}
