package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/marcboeker/go-duckdb"

	"github.com/samsyn/samsyn/schemas"
)

// Settings applied to every DuckDB connection Samsyn opens: no extension is ever downloaded
// or loaded behind our back.
var Settings = []string{
	"SET autoinstall_known_extensions = false",
	"SET autoload_known_extensions = false",
}

// OpenDB opens a DuckDB database (path "" for in-memory) with Settings and extra statements
// run on every new connection.
func OpenDB(path string, extra ...string) (*sql.DB, error) {
	return openDB(path, new(atomic.Bool), extra...)
}

// openDB is OpenDB whose connections skip the statements once locked is set: the settings
// are the database's own by then, and a locked configuration refuses every SET.
func openDB(path string, locked *atomic.Bool, extra ...string) (*sql.DB, error) {
	init := append(append([]string{}, Settings...), extra...)
	connector, err := duckdb.NewConnector(path, func(execer driver.ExecerContext) error {
		if locked.Load() {
			return nil
		}
		for _, stmt := range init {
			if _, err := execer.ExecContext(context.Background(), stmt, nil); err != nil {
				return fmt.Errorf("%s: %w", stmt, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(connector), nil
}

// ErrLocked is returned when another process (a running node) holds the store.
var ErrLocked = errors.New("the store is in use by another process (is the node serving?)")

// HandOverView is the view through which the importer hands staged rows to the store.
const HandOverView = "samsyn_incoming_view"

// Store is an open node store.
type Store struct {
	db     *sql.DB
	path   string
	locked *atomic.Bool // set by LockConfiguration
	// snap is the data snapshot id, read once and then set by each import that commits
	// (Committed): queries and the release cache need it on every call.
	snap atomic.Pointer[string]
}

// Open opens (creating if needed) the store at path and migrates it to the current schema.
func Open(ctx context.Context, path string) (*Store, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("create store folder: %w", err)
		}
	}
	locked := new(atomic.Bool)
	db, err := openDB(path, locked)
	if err != nil {
		if strings.Contains(err.Error(), "Could not set lock") {
			return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if _, err := schemas.Migrate(ctx, db); err != nil {
		return nil, errors.Join(fmt.Errorf("open store %s: %w", path, err), db.Close())
	}
	// An import cut short can leave its hand-over view behind; it points at freed memory.
	if _, err := db.ExecContext(ctx, "DROP VIEW IF EXISTS "+HandOverView); err != nil {
		return nil, errors.Join(fmt.Errorf("open store %s: %w", path, err), db.Close())
	}
	if _, err := db.ExecContext(ctx, importLogDDL); err != nil {
		return nil, errors.Join(fmt.Errorf("open store %s: create import log: %w", path, err), db.Close())
	}
	// The store holds the association's participants: owner only, whatever the umask was.
	for _, p := range []string{path, path + ".wal"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, errors.Join(fmt.Errorf("open store %s: %w", path, err), db.Close())
		}
	}
	return &Store{db: db, path: path, locked: locked}, nil
}

// LockConfiguration freezes the store's DuckDB settings (memory limit, file access, profiling,
// extensions) for as long as it is open: no statement on any connection can change one after
// this, the analysts' included. Without it an analyst's SET GLOBAL could lift the memory limit
// or turn on profiling, which prints every statement's plan with its constants (the
// record-key key among them, from the node's macro) to the node's output. The node calls it once its own settings
// are in place, before it serves; a second call does nothing.
func (s *Store) LockConfiguration(ctx context.Context) error {
	if s.locked.Load() {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, "SET lock_configuration = true"); err != nil {
		return fmt.Errorf("lock the store's configuration: %w", err)
	}
	s.locked.Store(true)
	return nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// DB is the store's database handle, for the node's own packages.
func (s *Store) DB() *sql.DB { return s.db }

// Path is the store's file.
func (s *Store) Path() string { return s.path }

const importLogDDL = `CREATE TABLE IF NOT EXISTS samsyn_import (
  seq            INTEGER NOT NULL,
  table_name     VARCHAR NOT NULL,
  files          VARCHAR NOT NULL,   -- file base names, newline-separated
  file_sha256    VARCHAR NOT NULL,   -- hex digests in the same order, newline-separated
  rows_read      BIGINT  NOT NULL,
  rows_changed   BIGINT  NOT NULL,
  schema_version INTEGER NOT NULL,
  imported_at    TIMESTAMP NOT NULL,
  snapshot_id    VARCHAR NOT NULL
)`

// ImportRecord is one entry of the import log.
type ImportRecord struct {
	Seq           int
	Table         string
	Files         []string
	FileSHA256    []string
	RowsRead      int64
	RowsChanged   int64
	SchemaVersion int
	ImportedAt    time.Time
	SnapshotID    string
}

// NextSnapshot derives the snapshot id that follows prev when rec is applied. It depends only
// on the history of imported content, so two nodes that imported the same files in the same
// order share a snapshot id.
func NextSnapshot(prev string, rec ImportRecord) string {
	h := sha256.New()
	fmt.Fprintf(h, "samsyn-snapshot-v1\n%s\n%s\n%d\n", prev, rec.Table, rec.SchemaVersion)
	for _, d := range rec.FileSHA256 {
		fmt.Fprintf(h, "%s\n", d)
	}
	return hex.EncodeToString(h.Sum(nil))[:20]
}

// Tx is the part of a transaction the import log needs.
type Tx interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// AppendImport adds rec to the import log inside tx, filling Seq and SnapshotID.
func AppendImport(ctx context.Context, tx Tx, rec *ImportRecord) error {
	var prev sql.NullString
	var seq sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT seq, snapshot_id FROM samsyn_import ORDER BY seq DESC LIMIT 1`).Scan(&seq, &prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read import log: %w", err)
	}
	rec.Seq = int(seq.Int64) + 1
	rec.SnapshotID = NextSnapshot(prev.String, *rec)
	_, err = tx.ExecContext(ctx, `INSERT INTO samsyn_import VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		rec.Seq, rec.Table, strings.Join(rec.Files, "\n"), strings.Join(rec.FileSHA256, "\n"),
		rec.RowsRead, rec.RowsChanged, rec.SchemaVersion, rec.ImportedAt.UTC(), rec.SnapshotID)
	if err != nil {
		return fmt.Errorf("append import log: %w", err)
	}
	return nil
}

// Imports lists the import log, oldest first.
func (s *Store) Imports(ctx context.Context) ([]ImportRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, table_name, files, file_sha256, rows_read, rows_changed, schema_version, imported_at, snapshot_id FROM samsyn_import ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("read import log: %w", err)
	}
	defer rows.Close()
	var out []ImportRecord
	for rows.Next() {
		var r ImportRecord
		var files, digests string
		if err := rows.Scan(&r.Seq, &r.Table, &files, &digests, &r.RowsRead, &r.RowsChanged, &r.SchemaVersion, &r.ImportedAt, &r.SnapshotID); err != nil {
			return nil, fmt.Errorf("read import log: %w", err)
		}
		r.Files, r.FileSHA256 = strings.Split(files, "\n"), strings.Split(digests, "\n")
		out = append(out, r)
	}
	return out, rows.Err()
}

// Snapshot is the node's data snapshot id: the latest import's, or "empty" before any. It is
// read from the import log once and then kept in memory; every import through this Store
// updates it when it commits (Committed).
func (s *Store) Snapshot(ctx context.Context) (string, error) {
	if p := s.snap.Load(); p != nil {
		return *p, nil
	}
	id := "empty"
	err := s.db.QueryRowContext(ctx, `SELECT snapshot_id FROM samsyn_import ORDER BY seq DESC LIMIT 1`).Scan(&id)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("read snapshot: %w", err)
	}
	// An import that commits meanwhile has set the newer id: keep it.
	s.snap.CompareAndSwap(nil, &id)
	return *s.snap.Load(), nil
}

// Committed records that an import committed rec: its snapshot id is the store's now. A
// query that started before the call may be labelled with the previous id; that is safe for
// the release cache, which is only ever looked up under the newest id.
func (s *Store) Committed(rec ImportRecord) {
	id := rec.SnapshotID
	s.snap.Store(&id)
}

// LastImport is the time of the latest import, or the zero time before any.
func (s *Store) LastImport(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.db.QueryRowContext(ctx, `SELECT imported_at FROM samsyn_import ORDER BY seq DESC LIMIT 1`).Scan(&t)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	return t, err
}

// Count returns the number of rows in a schema table.
func (s *Store) Count(ctx context.Context, table string) (int64, error) {
	if _, ok := schemas.V1().Table(table); !ok {
		return 0, fmt.Errorf("unknown table %q", table)
	}
	var n int64
	err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n)
	return n, err
}
