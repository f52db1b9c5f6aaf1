package coordinator

import (
	"slices"
	"testing"

	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/queries/wire"
)

func dispatch(qi int, assoc, st, cohort, round string) state.Dispatch {
	return state.Dispatch{QueryIndex: qi, Association: assoc, State: st,
		Metadata: map[string]string{wire.MetaCohort: cohort, wire.MetaRound: round}}
}

// TestCurrentRoundResumesWhereTheLastRunStopped: after a restart the coordinator asks only
// the members of the latest round that have not answered it; with nothing stored it starts
// round 1 with every approving association, sorted.
func TestCurrentRoundResumesWhereTheLastRunStopped(t *testing.T) {
	for _, c := range []struct {
		name        string
		stored      []state.Dispatch
		wantCohort  []string
		wantRound   int
		wantAnswers []string
	}{
		{"nothing stored", nil, []string{"a", "b", "c"}, 1, nil},
		{"round 1 half answered", []state.Dispatch{
			dispatch(0, "a", state.DispatchReleased, "a,b,c", "1"),
			dispatch(0, "b", state.DispatchFailed, "a,b,c", "1"),
		}, []string{"a", "b", "c"}, 1, []string{"a"}},
		{"a later round wins", []state.Dispatch{
			dispatch(0, "a", state.DispatchReleased, "a,b,c", "1"),
			dispatch(0, "c", state.DispatchReleased, "a,c", "2"),
		}, []string{"a", "c"}, 2, []string{"c"}},
		{"another query's rounds do not count", []state.Dispatch{
			dispatch(1, "a", state.DispatchReleased, "a,c", "3"),
		}, []string{"a", "b", "c"}, 1, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cohort, round, answered := currentRound(c.stored, 0, []string{"c", "a", "b"})
			var got []string
			for a := range answered {
				got = append(got, a)
			}
			slices.Sort(got)
			if !slices.Equal(cohort, c.wantCohort) || round != c.wantRound || !slices.Equal(got, c.wantAnswers) {
				t.Fatalf("cohort %v round %d answered %v; want %v %d %v", cohort, round, got, c.wantCohort, c.wantRound, c.wantAnswers)
			}
		})
	}
}

func TestMissingOfListsTheApprovingOutsideTheCohort(t *testing.T) {
	if got := missingOf([]string{"a", "b", "c"}, []string{"a", "c"}); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("missing %v", got)
	}
	if got := missingOf([]string{"a", "b"}, nil); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("missing %v", got)
	}
}
