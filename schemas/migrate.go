package schemas

import (
	"context"
	"database/sql"
	"fmt"
)

// Migration moves a store from one schema version to the next.
type Migration struct {
	Version    int
	Statements func(*Schema) []string
}

// Migrations lists every step from an empty store to Version, in order.
var Migrations = []Migration{
	{Version: 1, Statements: func(s *Schema) []string {
		stmts := make([]string, 0, len(s.Tables))
		for _, t := range s.Tables {
			stmts = append(stmts, t.DDL())
		}
		return stmts
	}},
}

// ErrNewerStore is returned when a store was written by a newer schema than this binary knows.
var ErrNewerStore = fmt.Errorf("store has a newer schema version than this binary (%d)", Version)

// Migrate brings the store behind db to Version inside one transaction and returns the
// version it found. A store at a newer version is refused.
func Migrate(ctx context.Context, db *sql.DB) (found int, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin migration: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS samsyn_schema (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)`); err != nil {
		return 0, fmt.Errorf("create version table: %w", err)
	}
	if err = tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM samsyn_schema`).Scan(&found); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if found > Version {
		return found, fmt.Errorf("%w: the store is at version %d", ErrNewerStore, found)
	}
	s := V1()
	for _, m := range Migrations {
		if m.Version <= found {
			continue
		}
		for _, stmt := range m.Statements(s) {
			if _, err = tx.ExecContext(ctx, stmt); err != nil {
				return found, fmt.Errorf("migrate to version %d: %w", m.Version, err)
			}
		}
		if _, err = tx.ExecContext(ctx, `INSERT INTO samsyn_schema VALUES (?, now())`, m.Version); err != nil {
			return found, fmt.Errorf("record version %d: %w", m.Version, err)
		}
	}
	if err = tx.Commit(); err != nil {
		return found, fmt.Errorf("commit migration: %w", err)
	}
	return found, nil
}
