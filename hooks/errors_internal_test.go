package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

func TestDatabaseUnavailable(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("list invites: %w", err) }
	for name, c := range map[string]struct {
		err  error
		want bool
	}{
		"deadline":           {wrap(context.DeadlineExceeded), true},
		"connection refused": {wrap(&pgconn.ConnectError{}), true},
		"starting up":        {wrap(&pgconn.PgError{Code: "57P03"}), true},
		"crash shutdown":     {wrap(&pgconn.PgError{Code: "57P02"}), true},
		"admin shutdown":     {wrap(&pgconn.PgError{Code: "57P01"}), true},
		"connection failure": {wrap(&pgconn.PgError{Code: "08006"}), true},
		"too many clients":   {wrap(&pgconn.PgError{Code: "53300"}), true},
		"closed connection":  {wrap(pgconn.ErrConnClosed), true},
		"broken connection":  {wrap(io.ErrUnexpectedEOF), true},
		"unique violation":   {wrap(&pgconn.PgError{Code: "23505"}), false},
		"undefined table":    {wrap(&pgconn.PgError{Code: "42P01"}), false},
		"no rows":            {wrap(pgx.ErrNoRows), false},
		"cancelled":          {wrap(context.Canceled), false},
		"other":              {errors.New("boom"), false},
	} {
		require.Equal(t, c.want, databaseUnavailable(c.err), name)
	}
}
