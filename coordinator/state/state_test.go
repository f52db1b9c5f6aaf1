package state

import (
	"context"
	"errors"
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
