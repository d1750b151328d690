// Package migrations owns the database schema: River's tables (through rivermigrate) and this project's
// own (embedded goose migrations in sql/).
package migrations

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

//go:embed sql/*.sql
var embedded embed.FS

// lockID serialises concurrent `migrate` runs (two replicas starting at once) across both migration sets.
const lockID int64 = 0x6b68_6d69_6772 // "khmigr"

// Result says what Up applied.
type Result struct {
	River []int    // River migration versions applied
	Ours  []string // our migration file names applied
}

// Up applies River's migrations and then ours. Running it again applies nothing and succeeds.
func Up(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) (Result, error) {
	var res Result

	// One migration at a time across processes (two replicas starting together): a session advisory lock,
	// held on its own connection while both sets run. River applies each of its migrations in its own
	// transaction (one adds an enum value that the next uses), so one transaction cannot hold the lock.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("acquire migration connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockID); err != nil {
		return res, fmt.Errorf("take migration lock: %w", err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockID) }()

	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: logger})
	if err != nil {
		return res, fmt.Errorf("river migrator: %w", err)
	}
	riverRes, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return res, fmt.Errorf("apply river migrations: %w", err)
	}
	for _, v := range riverRes.Versions {
		res.River = append(res.River, v.Version)
	}

	provider, closeDB, err := newProvider(pool, logger)
	if err != nil {
		return res, err
	}
	defer closeDB()
	applied, err := provider.Up(ctx)
	if err != nil {
		return res, fmt.Errorf("apply migrations: %w", err)
	}
	for _, a := range applied {
		res.Ours = append(res.Ours, a.Source.Path)
	}
	return res, nil
}

// ErrPending means the database is reachable but a migration has not been applied yet.
var ErrPending = errors.New("migrations pending: run `kratos-hooks migrate`")

// Check returns nil when every River migration and every one of ours is applied, ErrPending (wrapped,
// with what is missing) when some are not, and another error when it could not tell.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("river migrator: %w", err)
	}
	v, err := migrator.Validate(ctx, nil)
	if err != nil {
		return fmt.Errorf("check river migrations: %w", err)
	}
	if !v.OK {
		return fmt.Errorf("%w (river: %s)", ErrPending, strings.Join(v.Messages, "; "))
	}

	provider, closeDB, err := newProvider(pool, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer closeDB()
	current, target, err := provider.GetVersions(ctx)
	if err != nil {
		return fmt.Errorf("check migrations: %w", err)
	}
	if current < target {
		return fmt.Errorf("%w (schema at version %d of %d)", ErrPending, current, target)
	}
	return nil
}

func newProvider(pool *pgxpool.Pool, logger *slog.Logger) (*goose.Provider, func(), error) {
	sqlFS, err := fs.Sub(embedded, "sql")
	if err != nil {
		return nil, nil, err
	}
	db := stdlib.OpenDBFromPool(pool)
	provider, err := goose.NewProvider(goose.DialectPostgres, db, sqlFS,
		goose.WithDisableGlobalRegistry(true),
		goose.WithTableName("kratos_hooks_migrations"),
		goose.WithSlog(logger),
	)
	if err != nil {
		_ = db.Close()
		return nil, nil, fmt.Errorf("migration provider: %w", err)
	}
	return provider, func() { _ = db.Close() }, nil
}

// Fingerprint identifies the full schema (River's migrations and ours). Test helpers name template
// databases by it, so a changed migration gets a new template.
func Fingerprint() string {
	h := sha256.New()
	migrator, err := rivermigrate.New(riverpgxv5.New(nil), &rivermigrate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		for _, m := range migrator.AllVersions() {
			fmt.Fprintf(h, "river:%d:%s\n", m.Version, m.SQLUp)
		}
	}
	_ = fs.WalkDir(embedded, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := embedded.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s:%x\n", path, sha256.Sum256(b))
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}
