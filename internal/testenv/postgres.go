package testenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kratos-hooks/kratos-hooks/migrations"
)

// DB is a database of its own for one test, dropped when the test ends.
type DB struct {
	Name string
	URL  string
	Pool *pgxpool.Pool
}

// NewDB creates a database with the full schema (River's and ours) applied. It is cloned from a template
// database migrated once per schema version, which takes a fraction of running the migrations.
func NewDB(t testing.TB) *DB {
	t.Helper()
	tpl := KeepDB(t, "kh_tpl_"+migrations.Fingerprint()[:16], "template0", 5*time.Minute, func(ctx context.Context, url string) error {
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return err
		}
		defer pool.Close()
		_, err = migrations.Up(ctx, pool, slog.New(slog.DiscardHandler))
		return err
	})
	return createDB(t, tpl)
}

// NewEmptyDB creates a database with no schema at all.
func NewEmptyDB(t testing.TB) *DB {
	t.Helper()
	return createDB(t, "template0")
}

// DatabaseURL returns the URL of database name on the test server.
func DatabaseURL(t testing.TB, name string) string {
	t.Helper()
	u, err := url.Parse(Getenv(t, EnvDatabaseURL))
	if err != nil {
		t.Fatalf("%s: %v", EnvDatabaseURL, err)
	}
	u.Path = "/" + name
	return u.String()
}

func createDB(t testing.TB, template string) *DB {
	t.Helper()
	ctx := context.Background()
	name := Name("kh_test")
	admin := adminConn(t)
	defer admin.Close(ctx)

	// Two CREATE DATABASE from one template at the same moment can fail with "source database is being
	// accessed by other users" (55006); try again briefly.
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		_, err = admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE %s`, pgx.Identifier{name}.Sanitize(), pgx.Identifier{template}.Sanitize()))
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}

	db := &DB{Name: name, URL: DatabaseURL(t, name)}
	pc, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	pc.MaxConns = 8
	db.Pool, err = pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	t.Cleanup(func() {
		db.Pool.Close()
		DropDB(t, name)
	})
	return db
}

// DropDB drops a database, disconnecting whoever is still connected.
func DropDB(t testing.TB, name string) {
	ctx := context.Background()
	admin := adminConn(t)
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, pgx.Identifier{name}.Sanitize())); err != nil {
		t.Errorf("drop test database %s: %v", name, err)
	}
}

func adminConn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, Getenv(t, EnvDatabaseURL))
	if err != nil {
		t.Fatalf("connect to %s: %v", EnvDatabaseURL, err)
	}
	return conn
}

// KeepDB makes sure a database called name exists on the test server, and returns name: the first caller
// creates it from the database from (a template) and fills it with fill, which gets its URL; later callers,
// in this process or a later one against the same server, find it as it is. It is never dropped, so it
// caches what is slow to make (thousands of Kratos identities) between runs: name it after everything that
// decides its content. Nothing may stay connected to it after fill, and a caller that changes it must
// clone it first (CREATE DATABASE … TEMPLATE name).
//
// Test processes run in parallel (one per package), so creation happens under an advisory lock, into a
// scratch database that is renamed only once complete.
func KeepDB(t testing.TB, name, from string, timeout time.Duration, fill func(ctx context.Context, url string) error) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	admin := adminConn(t)
	defer admin.Close(context.Background())

	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, name); err != nil {
		t.Fatalf("lock template %s: %v", name, err)
	}
	defer func() { _, _ = admin.Exec(context.Background(), `SELECT pg_advisory_unlock(hashtext($1))`, name) }()

	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		t.Fatalf("look up template %s: %v", name, err)
	}
	if exists {
		return name
	}
	scratch := name + "_building"
	if _, err := admin.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, pgx.Identifier{scratch}.Sanitize())); err != nil {
		t.Fatalf("drop stale %s: %v", scratch, err)
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE %s`, pgx.Identifier{scratch}.Sanitize(), pgx.Identifier{from}.Sanitize())); err != nil {
		t.Fatalf("create %s: %v", scratch, err)
	}
	if err := fill(ctx, DatabaseURL(t, scratch)); err != nil {
		t.Fatalf("fill template %s: %v", name, err)
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %s RENAME TO %s`, pgx.Identifier{scratch}.Sanitize(), pgx.Identifier{name}.Sanitize())); err != nil {
		t.Fatalf("rename template %s: %v", name, err)
	}
	return name
}
