package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/samsyn/samsyn/coordinator/study"
)

const ddl = `
CREATE TABLE IF NOT EXISTS studies (id VARCHAR PRIMARY KEY, body VARCHAR NOT NULL, state VARCHAR NOT NULL,
  evaluator VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL);
CREATE INDEX IF NOT EXISTS studies_by_state ON studies (state);
CREATE TABLE IF NOT EXISTS transitions (study VARCHAR NOT NULL, state VARCHAR NOT NULL, actor VARCHAR NOT NULL,
  note VARCHAR NOT NULL, at TIMESTAMP NOT NULL);
CREATE INDEX IF NOT EXISTS transitions_by_study ON transitions (study);
CREATE TABLE IF NOT EXISTS probe (k VARCHAR PRIMARY KEY, at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (study VARCHAR NOT NULL, association VARCHAR NOT NULL, body VARCHAR NOT NULL,
  at TIMESTAMP NOT NULL, PRIMARY KEY (study, association));
CREATE TABLE IF NOT EXISTS dispatches (study VARCHAR NOT NULL, query_index INTEGER NOT NULL, association VARCHAR NOT NULL,
  state VARCHAR NOT NULL, attempts INTEGER NOT NULL, error VARCHAR NOT NULL, release BLOB, metadata VARCHAR NOT NULL,
  updated_at TIMESTAMP NOT NULL, PRIMARY KEY (study, query_index, association));
CREATE TABLE IF NOT EXISTS results (study VARCHAR NOT NULL, query_index INTEGER NOT NULL, query_id VARCHAR NOT NULL,
  release BLOB NOT NULL, checks VARCHAR NOT NULL, released_at TIMESTAMP NOT NULL, PRIMARY KEY (study, query_index));
`

// Store is the coordinator's state: SQLite in WAL mode. Every change is all or nothing and
// synced before it is acknowledged. Changes go through one writer (write), which commits the
// changes waiting for it together: one fsync for all of them, as a database's group commit
// does, so concurrent studies do not queue for a sync each.
type Store struct {
	db *sql.DB

	mu       sync.Mutex
	writeErr error // the last write's failure, until a write succeeds

	writes    chan *writeReq
	quit      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

// txn is what a change may use: the writer's connection, inside its transaction.
type txn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type writeReq struct {
	ctx  context.Context
	fn   func(ctx context.Context, tx txn) error
	done chan error
}

// maxBatch bounds the changes committed together.
const maxBatch = 64

// ErrClosed is returned for a change asked of a closed store.
var ErrClosed = errors.New("coordinator state closed")

// write applies fn as one all-or-nothing change and returns once it is synced, or fn's own
// error (nothing of fn is then kept). It waits for the outcome even when ctx ends meanwhile,
// so that a nil error always means written and an error always means not written.
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, tx txn) error) error {
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case s.writes <- r:
	case <-s.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-r.done
}

// writer commits the waiting changes, up to maxBatch at a time, until the store closes.
func (s *Store) writer(conn *sql.Conn) {
	defer close(s.stopped)
	defer func() { conn.Close() }()
	for {
		var batch []*writeReq
		select {
		case <-s.quit:
			return
		case r := <-s.writes:
			batch = append(batch, r)
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-s.writes:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		if err := s.commit(conn, batch); err != nil {
			// The connection may be unusable (it failed to begin or to roll back): take a
			// fresh one for the next batch.
			if c, cerr := s.db.Conn(context.Background()); cerr == nil {
				conn.Close()
				conn = c
			}
		}
	}
}

// commit runs a batch in one transaction, each change inside its own savepoint so that a
// change that fails (a conflict) leaves the others, and answers every change. It returns an
// error when the connection could not begin, roll back or commit.
func (s *Store) commit(conn *sql.Conn, batch []*writeReq) error {
	ctx := context.Background()
	errs := make([]error, len(batch))
	finish := func(common error) {
		for i, r := range batch {
			if errs[i] != nil {
				r.done <- errs[i]
			} else {
				r.done <- common
			}
		}
	}
	abort := func(err error) error {
		conn.ExecContext(ctx, "ROLLBACK")
		finish(err)
		return err
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		finish(err)
		return err
	}
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err // asked for, then given up before its turn: not applied
			continue
		}
		if _, err := conn.ExecContext(ctx, "SAVEPOINT change"); err != nil {
			return abort(err)
		}
		// Not r.ctx: an interrupted statement may make SQLite roll back the whole batch.
		if err := r.fn(context.WithoutCancel(r.ctx), conn); err != nil {
			errs[i] = err
			if autocommit(conn) {
				// SQLite rolled the whole transaction back itself (a full disk, an I/O
				// error): none of the batch is written.
				finish(err)
				return nil
			}
			if _, rerr := conn.ExecContext(ctx, "ROLLBACK TO change"); rerr != nil {
				return abort(rerr)
			}
		}
		if _, err := conn.ExecContext(ctx, "RELEASE change"); err != nil {
			return abort(err)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return abort(err)
	}
	finish(nil)
	return nil
}

// autocommit reports whether conn is outside any transaction.
func autocommit(conn *sql.Conn) bool {
	auto := false
	conn.Raw(func(dc any) error {
		if c, ok := dc.(*sqlite3.SQLiteConn); ok {
			auto = c.AutoCommit()
		}
		return nil
	})
	return auto
}

// Open opens or creates the store at path (mode 0600, its folder 0750).
func Open(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create state folder: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open coordinator state %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_busy_timeout", "15000")
	q.Set("_txlock", "immediate")
	q.Set("_foreign_keys", "on")
	db, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open coordinator state %s: %w", path, err)
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		return nil, errors.Join(fmt.Errorf("open coordinator state %s: journal mode %q, expected wal (is it a SQLite database?): %v", path, mode, err), db.Close())
	}
	var check string
	if err := db.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&check); err != nil || check != "ok" {
		return nil, errors.Join(fmt.Errorf("open coordinator state %s: integrity check: %q %v", path, check, err), db.Close())
	}
	var found int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&found); err != nil {
		return nil, errors.Join(fmt.Errorf("open coordinator state %s: %w", path, err), db.Close())
	}
	if found > Version {
		return nil, errors.Join(fmt.Errorf("open coordinator state %s: %w: the state is at version %d, this binary knows %d (restore the backup taken before the upgrade, or run the newer release)", path, ErrNewerState, found, Version), db.Close())
	}
	if _, err := db.ExecContext(ctx, ddl); err != nil {
		return nil, errors.Join(fmt.Errorf("create coordinator state: %w", err), db.Close())
	}
	if found < Version {
		if _, err := db.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", Version)); err != nil {
			return nil, errors.Join(fmt.Errorf("mark coordinator state version: %w", err), db.Close())
		}
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open coordinator state %s: %w", path, err), db.Close())
	}
	s := &Store{db: db, writes: make(chan *writeReq), quit: make(chan struct{}), stopped: make(chan struct{})}
	go s.writer(conn)
	return s, nil
}

// Version is the coordinator state's schema version (SQLite's user_version). A release that
// changes the tables raises it and migrates older states in Open; a state written by a newer
// release is refused rather than misread.
const Version = 1

// ErrNewerState is returned when the state was written by a newer release.
var ErrNewerState = errors.New("coordinator state written by a newer release")

// ErrUnavailable wraps a storage failure (disk full, I/O error): the change was not made.
var ErrUnavailable = errors.New("coordinator state unavailable")

// wrote records the outcome of a write, so Ready can report a store that cannot write.
func (s *Store) wrote(err error) error {
	if err == nil || errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
		s.mu.Lock()
		if err == nil {
			s.writeErr = nil
		}
		s.mu.Unlock()
		return err
	}
	var se sqlite3.Error
	if errors.As(err, &se) && (se.Code == sqlite3.ErrFull || se.Code == sqlite3.ErrIoErr || se.Code == sqlite3.ErrCantOpen ||
		se.Code == sqlite3.ErrReadonly || se.Code == sqlite3.ErrCorrupt || se.Code == sqlite3.ErrNotADB || se.Code == sqlite3.ErrBusy) {
		s.mu.Lock()
		s.writeErr = err
		s.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// Ready reports whether the store can write now: it writes a probe row (a full disk fails
// it) and returns the failure. A daemon is not ready while this fails.
func (s *Store) Ready(ctx context.Context) error {
	return s.wrote(s.write(ctx, func(ctx context.Context, tx txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO probe VALUES ('ready', ?) ON CONFLICT (k) DO UPDATE SET at = excluded.at`, time.Now().UTC())
		return err
	}))
}

// Close stops the writer, once its batch is committed, and closes the store.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.stopped
	})
	return s.db.Close()
}

// ErrNotFound is returned for an unknown study or result.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a change no longer applies (state moved on, decision made).
var ErrConflict = errors.New("conflict")

func (s *Store) createStudy(ctx context.Context, st *study.Study, actor string) error {
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.write(ctx, func(ctx context.Context, tx txn) error {
		now := time.Now().UTC()
		if _, err := tx.ExecContext(ctx, `INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?)`, st.ID, string(body), string(st.State), st.Evaluator, st.CreatedAt, now); err != nil {
			return fmt.Errorf("store study: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO transitions VALUES (?, ?, ?, ?, ?)`, st.ID, string(st.State), actor, "", now); err != nil {
			return fmt.Errorf("store transition: %w", err)
		}
		return nil
	})
}

// CreateStudy stores a new study and its first transition.
func (s *Store) CreateStudy(ctx context.Context, st *study.Study, actor string) error {
	return s.wrote(s.createStudy(ctx, st, actor))
}

// Study returns a study with its current state.
func (s *Store) Study(ctx context.Context, id string) (*study.Study, error) {
	var body, state string
	err := s.db.QueryRowContext(ctx, `SELECT body, state FROM studies WHERE id = ?`, id).Scan(&body, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("study %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var st study.Study
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return nil, err
	}
	st.State = study.State(state)
	return &st, nil
}

// Studies lists studies, newest first; evaluator "" lists everyone's, and states, if given,
// keep only studies in those states.
func (s *Store) Studies(ctx context.Context, evaluator string, states ...study.State) ([]*study.Study, error) {
	q := `SELECT body, state FROM studies WHERE (? = '' OR evaluator = ?)`
	args := []any{evaluator, evaluator}
	if len(states) > 0 {
		q += ` AND state IN (`
		for i, st := range states {
			if i > 0 {
				q += ", "
			}
			q += "?"
			args = append(args, string(st))
		}
		q += `)`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at DESC, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*study.Study
	for rows.Next() {
		var body, state string
		if err := rows.Scan(&body, &state); err != nil {
			return nil, err
		}
		var st study.Study
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			return nil, err
		}
		st.State = study.State(state)
		out = append(out, &st)
	}
	return out, rows.Err()
}

// Move changes a study's state from from to to, if it is still in from.
func (s *Store) Move(ctx context.Context, id string, from, to study.State, actor, note string) error {
	return s.wrote(s.move(ctx, id, from, to, actor, note))
}

func (s *Store) move(ctx context.Context, id string, from, to study.State, actor, note string) error {
	if !study.CanMove(from, to) {
		return fmt.Errorf("%w: a study cannot move from %s to %s", ErrConflict, from, to)
	}
	return s.write(ctx, func(ctx context.Context, tx txn) error {
		now := time.Now().UTC()
		res, err := tx.ExecContext(ctx, `UPDATE studies SET state = ?, updated_at = ? WHERE id = ? AND state = ?`, string(to), now, id, string(from))
		if err != nil {
			return fmt.Errorf("move study %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: study %s is no longer %s", ErrConflict, id, from)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO transitions VALUES (?, ?, ?, ?, ?)`, id, string(to), actor, note, now)
		return err
	})
}

// Transition is one recorded state change.
type Transition struct {
	State study.State `json:"state"`
	Actor string      `json:"actor"`
	Note  string      `json:"note,omitempty"`
	At    time.Time   `json:"at"`
}

// Transitions lists a study's history, oldest first.
func (s *Store) Transitions(ctx context.Context, id string) ([]Transition, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, actor, note, at FROM transitions WHERE study = ? ORDER BY at, rowid`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Transition
	for rows.Next() {
		var t Transition
		var st string
		if err := rows.Scan(&st, &t.Actor, &t.Note, &t.At); err != nil {
			return nil, err
		}
		t.State = study.State(st)
		out = append(out, t)
	}
	return out, rows.Err()
}

// PutApproval records an association's decision; a decision, once made, is final.
func (s *Store) PutApproval(ctx context.Context, id string, a study.Approval) error {
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	err = s.write(ctx, func(ctx context.Context, tx txn) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO approvals VALUES (?, ?, ?, ?)`, id, a.Association, string(body), a.At)
		return err
	})
	if err != nil {
		var se sqlite3.Error
		if errors.As(err, &se) && se.Code == sqlite3.ErrConstraint {
			return fmt.Errorf("%w: %s has already decided on study %s", ErrConflict, a.Association, id)
		}
		return s.wrote(fmt.Errorf("store approval: %w", err))
	}
	return s.wrote(nil)
}

// Approvals lists the decisions on a study.
func (s *Store) Approvals(ctx context.Context, id string) ([]study.Approval, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT body FROM approvals WHERE study = ? ORDER BY association`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []study.Approval
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, err
		}
		var a study.Approval
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Dispatch states.
const (
	DispatchPending  = "pending"
	DispatchReleased = "released"
	DispatchRefused  = "refused"
	DispatchFailed   = "failed"
)

// Dispatch is one query sent to one node.
type Dispatch struct {
	QueryIndex  int               `json:"query_index"`
	Association string            `json:"association"`
	State       string            `json:"state"`
	Attempts    int               `json:"attempts"`
	Error       string            `json:"error,omitempty"`
	Release     []byte            `json:"-"` // the node's protected table, Arrow IPC stream
	Metadata    map[string]string `json:"metadata,omitempty"`
	UpdatedAt   time.Time         `json:"updated_at"`
}

// PutDispatch records a dispatch's progress or outcome. A released dispatch is never
// overwritten, so a restarted coordinator never asks that node again.
func (s *Store) PutDispatch(ctx context.Context, id string, d Dispatch) error {
	return s.PutDispatches(ctx, id, []Dispatch{d})
}

// PutDispatches records several dispatches in one transaction (one fan-out's outcomes).
func (s *Store) PutDispatches(ctx context.Context, id string, ds []Dispatch) error {
	return s.wrote(s.putDispatches(ctx, id, ds, `INSERT INTO dispatches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (study, query_index, association) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
  error = excluded.error, release = excluded.release, metadata = excluded.metadata, updated_at = excluded.updated_at
WHERE dispatches.state <> 'released'`))
}

// PutRound records the outcomes of one round of a pooled query. Unlike PutDispatches it
// replaces a released dispatch: a masked contribution of an earlier round is never unmasked
// once a new round has begun, so nothing of it is lost.
func (s *Store) PutRound(ctx context.Context, id string, ds []Dispatch) error {
	return s.wrote(s.putDispatches(ctx, id, ds, `INSERT OR REPLACE INTO dispatches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`))
}

// putDispatches writes ds with stmt in one transaction.
func (s *Store) putDispatches(ctx context.Context, id string, ds []Dispatch, stmt string) error {
	mds := make([]string, len(ds))
	for i, d := range ds {
		md, err := json.Marshal(d.Metadata)
		if err != nil {
			return err
		}
		mds[i] = string(md)
	}
	return s.write(ctx, func(ctx context.Context, tx txn) error {
		now := time.Now().UTC()
		for i, d := range ds {
			if _, err := tx.ExecContext(ctx, stmt, id, d.QueryIndex, d.Association, d.State, d.Attempts, d.Error, d.Release, mds[i], now); err != nil {
				return fmt.Errorf("store dispatch: %w", err)
			}
		}
		return nil
	})
}

// Dispatches lists a study's dispatches.
func (s *Store) Dispatches(ctx context.Context, id string) ([]Dispatch, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT query_index, association, state, attempts, error, release, metadata, updated_at
FROM dispatches WHERE study = ? ORDER BY query_index, association`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Dispatch
	for rows.Next() {
		var d Dispatch
		var md string
		if err := rows.Scan(&d.QueryIndex, &d.Association, &d.State, &d.Attempts, &d.Error, &d.Release, &md, &d.UpdatedAt); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(md), &d.Metadata); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Result is a released table of one query with its output checks.
type Result struct {
	QueryIndex int             `json:"query_index"`
	QueryID    string          `json:"query_id"`
	Release    []byte          `json:"-"` // merged protected table, Arrow IPC stream
	Checks     json.RawMessage `json:"checks"`
	ReleasedAt time.Time       `json:"released_at"`
}

// PutResult stores a query's merged result.
func (s *Store) PutResult(ctx context.Context, id string, r Result) error {
	err := s.write(ctx, func(ctx context.Context, tx txn) error {
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)`,
			id, r.QueryIndex, r.QueryID, r.Release, string(r.Checks), r.ReleasedAt.UTC())
		return err
	})
	if err != nil {
		return s.wrote(fmt.Errorf("store result: %w", err))
	}
	return s.wrote(nil)
}

// Results lists a study's results in query order.
func (s *Store) Results(ctx context.Context, id string) ([]Result, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT query_index, query_id, release, checks, released_at FROM results WHERE study = ? ORDER BY query_index`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Result
	for rows.Next() {
		var r Result
		var checks string
		if err := rows.Scan(&r.QueryIndex, &r.QueryID, &r.Release, &checks, &r.ReleasedAt); err != nil {
			return nil, err
		}
		r.Checks = json.RawMessage(checks)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Anchor is the latest audit entry a node reported with an answer: its sequence number and
// hash. `samsyn node audit verify --anchor SEQ:HASH` checks the node's log still holds it.
type Anchor struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// Anchors returns, per association, the highest audit entry its node has reported.
func (s *Store) Anchors(ctx context.Context) (map[string]Anchor, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT association, CAST(json_extract(metadata, '$."samsyn.audit_seq"') AS INTEGER) AS seq,
  json_extract(metadata, '$."samsyn.audit_head"') AS head
FROM dispatches WHERE state = 'released' AND head IS NOT NULL`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]Anchor{}
	for rows.Next() {
		var assoc, head string
		var seq int64
		if err := rows.Scan(&assoc, &seq, &head); err != nil {
			return nil, err
		}
		if a, ok := out[assoc]; !ok || seq > a.Seq {
			out[assoc] = Anchor{Seq: seq, Hash: head}
		}
	}
	return out, rows.Err()
}

// Backup writes a consistent copy of the state database at path to out (which must not
// exist), while the coordinator may be running: SQLite's VACUUM INTO reads one snapshot.
func Backup(ctx context.Context, path, out string) error {
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("%s exists: choose a new file", out)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Set("_busy_timeout", "15000")
	db, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", out); err != nil {
		return fmt.Errorf("back up coordinator state %s: %w", path, err)
	}
	if err := os.Chmod(out, 0o600); err != nil {
		return err
	}
	var ok string
	check, err := sql.Open("sqlite3", "file:"+out+"?mode=ro")
	if err != nil {
		return err
	}
	defer check.Close()
	if err := check.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		return fmt.Errorf("the backup %s does not pass SQLite's integrity check: %s %v", out, ok, err)
	}
	return nil
}

// Revoke records that association withdrew its standing approval of study id.
func (s *Store) Revoke(ctx context.Context, id, association string, at time.Time) error {
	return s.wrote(s.write(ctx, func(ctx context.Context, tx txn) error {
		var body string
		if err := tx.QueryRowContext(ctx, `SELECT body FROM studies WHERE id = ?`, id).Scan(&body); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("study %s: %w", id, ErrNotFound)
			}
			return err
		}
		var st study.Study
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			return err
		}
		if st.Revoked == nil {
			st.Revoked = map[string]time.Time{}
		}
		if _, done := st.Revoked[association]; done {
			return fmt.Errorf("%w: %s has already revoked study %s", ErrConflict, association, id)
		}
		st.Revoked[association] = at.UTC()
		raw, err := json.Marshal(st)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE studies SET body = ? WHERE id = ?`, string(raw), id)
		return err
	}))
}
