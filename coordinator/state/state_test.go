package state

import (
	"context"
	"errors"
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
