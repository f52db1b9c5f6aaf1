package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/samsyn/samsyn/coordinator/study"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStudyLifecycleSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.sqlite")
	s := open(t, path)
	st := &study.Study{ID: study.NewID(), Title: "t", Purpose: "p", Evaluator: "eva", State: study.Submitted, CreatedAt: time.Now(),
		Queries: []study.Query{{ID: "q", Hash: "h", Params: map[string]string{"from": "2021-01-01"}}}, Associations: []string{"hbs", "varna"}}
	if err := s.CreateStudy(ctx, st, "eva"); err != nil {
		t.Fatal(err)
	}
	if err := s.Move(ctx, st.ID, study.Submitted, study.AwaitingApproval, "coordinator", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Move(ctx, st.ID, study.Submitted, study.AwaitingApproval, "coordinator", ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("a stale move applied: %v", err)
	}
	if err := s.Move(ctx, st.ID, study.AwaitingApproval, study.Released, "x", ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("an illegal move applied: %v", err)
	}
	a := study.Approval{Association: "hbs", Decision: study.Refuse, Reason: "no", Actor: "owner", At: time.Now()}
	if err := s.PutApproval(ctx, st.ID, a); err != nil {
		t.Fatal(err)
	}
	a.Decision = study.Approve
	if err := s.PutApproval(ctx, st.ID, a); !errors.Is(err, ErrConflict) {
		t.Fatalf("a refusal was overturned: %v", err)
	}
	if err := s.PutDispatch(ctx, st.ID, Dispatch{QueryIndex: 0, Association: "varna", State: DispatchReleased, Attempts: 1, Release: []byte("arrow")}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDispatch(ctx, st.ID, Dispatch{QueryIndex: 0, Association: "varna", State: DispatchPending, Attempts: 2}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = open(t, path)
	defer s.Close()
	got, err := s.Study(ctx, st.ID)
	if err != nil || got.State != study.AwaitingApproval || got.Queries[0].Params["from"] != "2021-01-01" {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	tr, _ := s.Transitions(ctx, st.ID)
	if len(tr) != 2 || tr[1].State != study.AwaitingApproval {
		t.Fatalf("transitions %+v", tr)
	}
	ds, _ := s.Dispatches(ctx, st.ID)
	if len(ds) != 1 || ds[0].State != DispatchReleased || string(ds[0].Release) != "arrow" {
		t.Fatalf("a released dispatch was overwritten: %+v", ds)
	}
	if _, err := s.Study(ctx, "st-nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown study: %v", err)
	}
}

func TestABackupOfARunningStoreRestoresEveryStudy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, filepath.Join(dir, "state.sqlite"))
	defer s.Close()
	var ids []string
	for i := 0; i < 5; i++ {
		st := &study.Study{ID: study.NewID(), Title: "t", Purpose: "p", Evaluator: "eva", State: study.Submitted, CreatedAt: time.Now(),
			Queries: []study.Query{{ID: "q", Hash: "h"}}, Associations: []string{"hbs"}}
		if err := s.CreateStudy(ctx, st, "eva"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, st.ID)
	}
	out := filepath.Join(dir, "backup.sqlite")
	// The store stays open, as in a running coordinator.
	if err := Backup(ctx, filepath.Join(dir, "state.sqlite"), out); err != nil {
		t.Fatal(err)
	}
	if err := Backup(ctx, filepath.Join(dir, "state.sqlite"), out); err == nil {
		t.Fatal("a backup over an existing file")
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", err, fi.Mode())
	}
	restored := open(t, out)
	defer restored.Close()
	for _, id := range ids {
		if _, err := restored.Study(ctx, id); err != nil {
			t.Fatalf("study %s not in the backup: %v", id, err)
		}
	}
}

// A state written by a newer release is refused and left as it was; an older one is marked.
func TestAStateFromANewerReleaseIsRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.sqlite")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil || v != Version {
		t.Fatalf("a new state is at version %d (%v), want %d", v, err, Version)
	}
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", Version+1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(ctx, path); !errors.Is(err, ErrNewerState) {
		t.Fatalf("a newer state was opened: %v", err)
	}
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil || v != Version+1 {
		t.Fatalf("the refused state was changed: version %d %v", v, err)
	}
}

// Changes waiting for the writer are committed together, each all or nothing on its own: in
// one batch, approvals that conflict (a second decision) are refused while the others around
// them are written, and everything acknowledged is there after a restart.
func TestChangesCommittedTogetherStayAllOrNothingEach(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.sqlite")
	s := open(t, path)
	st := &study.Study{ID: study.NewID(), Title: "t", Purpose: "p", Evaluator: "eva", State: study.Submitted, CreatedAt: time.Now(),
		Queries: []study.Query{{ID: "q", Hash: "h"}}, Associations: []string{"hbs"}}
	if err := s.CreateStudy(ctx, st, "eva"); err != nil {
		t.Fatal(err)
	}
	// Hold the writer inside a change, so the next ones queue and form one batch.
	entered, hold := make(chan struct{}), make(chan struct{})
	blocked := make(chan error, 1)
	go func() {
		blocked <- s.write(ctx, func(ctx context.Context, tx txn) error {
			close(entered)
			<-hold
			_, err := tx.ExecContext(ctx, `INSERT INTO probe VALUES ('held', ?)`, time.Now())
			return err
		})
	}()
	<-entered
	assocs := []string{"hbs", "varna", "stockholm", "suvs", "roslagen", "samsund"}
	errs := make(chan error, 2*len(assocs))
	queued := make(chan struct{}, 2*len(assocs))
	for _, a := range assocs {
		for range 2 { // the second decision of an association conflicts, in the same batch
			go func() {
				queued <- struct{}{}
				errs <- s.PutApproval(ctx, st.ID, study.Approval{Association: a, Decision: study.Approve, Actor: "owner", At: time.Now()})
			}()
		}
	}
	for range 2 * len(assocs) {
		<-queued
	}
	time.Sleep(50 * time.Millisecond) // let the senders reach the writer's queue (a looser batch changes nothing asserted)
	close(hold)
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	var ok, conflicts int
	for range 2 * len(assocs) {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrConflict):
			conflicts++
		default:
			t.Fatalf("approval: %v", err)
		}
	}
	if ok != len(assocs) || conflicts != len(assocs) {
		t.Fatalf("%d written and %d conflicts, want %d each", ok, conflicts, len(assocs))
	}
	// A change given up before its turn is not written, and says so.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Move(gone, st.ID, study.Submitted, study.AwaitingApproval, "coordinator", ""); err == nil {
		t.Fatal("a cancelled change reported written")
	}
	s.Close()
	if err := s.Move(ctx, st.ID, study.Submitted, study.AwaitingApproval, "coordinator", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("a change on a closed store: %v", err)
	}

	s = open(t, path)
	defer s.Close()
	as, err := s.Approvals(ctx, st.ID)
	if err != nil || len(as) != len(assocs) {
		t.Fatalf("after restart: %d approvals, %v", len(as), err)
	}
	if got, _ := s.Study(ctx, st.ID); got.State != study.Submitted {
		t.Fatalf("the cancelled move was applied: %s", got.State)
	}
	var held int
	s.db.QueryRow(`SELECT count(*) FROM probe WHERE k = 'held'`).Scan(&held)
	if held != 1 {
		t.Fatalf("the held change: %d rows", held)
	}
}
