package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/samsyn/samsyn/coordinator/fanout"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/secagg"
	"github.com/samsyn/samsyn/queries/wire"
)

// A pooled query is answered in rounds. Round 1 asks every approving association for its
// masked contribution; if some do not answer, the round cannot be unmasked, and round 2
// asks the rest again as a smaller cohort with fresh masks. Each node's answer is stored as
// its round's outcome, so a restarted coordinator asks only the nodes of the current round
// that have not answered it.

// roundOf reads the cohort and round a stored dispatch belongs to.
func roundOf(d state.Dispatch) (cohort []string, round int) {
	round, _ = strconv.Atoi(d.Metadata[wire.MetaRound])
	if c := d.Metadata[wire.MetaCohort]; c != "" {
		cohort = strings.Split(c, ",")
	}
	return cohort, round
}

// currentRound finds the latest round of query qi in the stored dispatches: its cohort,
// its number and which members have answered it. With nothing stored, it is round 1 of the
// approving associations.
func currentRound(stored []state.Dispatch, qi int, approving []string) (cohort []string, round int, answered map[string]bool) {
	answered = map[string]bool{}
	for _, d := range stored {
		if d.QueryIndex != qi {
			continue
		}
		c, r := roundOf(d)
		if r > round && len(c) > 0 {
			cohort, round = c, r
		}
	}
	if round == 0 {
		cohort = slices.Sorted(slices.Values(approving))
		return cohort, 1, answered
	}
	for _, d := range stored {
		c, r := roundOf(d)
		if d.QueryIndex == qi && d.State == state.DispatchReleased && r == round && slices.Equal(c, cohort) {
			answered[d.Association] = true
		}
	}
	return cohort, round, answered
}

// dispatchPooled runs the rounds of query qi until a whole cohort has answered, and returns
// the associations of the approving set that are not in that cohort. Nodes found unavailable
// earlier in the study start outside the cohort (unless a probe finds them back).
func (c *Coordinator) dispatchPooled(ctx context.Context, s *study.Study, qi int, approved map[string]study.Approval, approving []string, stored []state.Dispatch, avail *availability) ([]string, error) {
	q := s.Queries[qi]
	e, ok := c.o.Catalog.Get(q.ID)
	if !ok {
		return nil, fmt.Errorf("query %s left the catalog", q.ID)
	}
	layout, err := e.Layout()
	if err != nil {
		return nil, err
	}
	for _, d := range stored {
		if d.QueryIndex == qi && d.State == state.DispatchReleased && d.Metadata[wire.MetaKind] == wire.KindTable {
			return missingOf(approving, []string{d.Association}), nil // an earlier run ended alone
		}
	}
	cohort, round, answered := currentRound(stored, qi, c.usable(ctx, avail, approving))
	if len(cohort) == 1 {
		return c.dispatchAlone(ctx, s, qi, approved, approving, cohort[0])
	}
	if len(cohort) == 0 {
		return missingOf(approving, nil), nil
	}
	for attempt := 0; attempt <= len(approving); attempt++ {
		var targets []fanout.Target
		failed := map[string]string{}
		for _, assoc := range cohort {
			if answered[assoc] {
				continue
			}
			n, ok := c.nodes[assoc]
			if !ok {
				failed[assoc] = "no node"
				continue
			}
			c.setProgress(s.ID, assoc, NodeProgress{State: "waiting"})
			targets = append(targets, fanout.Target{Association: assoc, Node: n.Client,
				Ticket: c.ticketFunc(s, qi, assoc, approved[assoc], cohort, round)})
		}
		if len(targets) > 0 {
			md := map[string]string{wire.MetaCohort: strings.Join(cohort, ","), wire.MetaRound: strconv.Itoa(round)}
			check := func(md map[string]string, rec arrow.Record, assoc string) ([]byte, error) {
				return c.checkContribution(md, rec, s.TicketStudy(), q, assoc, cohort, round, layout)
			}
			got, bad, err := c.runFanOut(ctx, s, qi, targets, avail, check, md, c.o.Store.PutRound)
			if err != nil {
				return nil, err
			}
			for a := range got {
				answered[a] = true
			}
			for a, why := range bad {
				failed[a] = why
			}
		}
		if len(failed) == 0 {
			break
		}
		if s.OnNodeFailure == study.OnFailureFail {
			return missingOf(approving, nil), nil
		}
		var next []string
		for _, a := range cohort {
			if _, bad := failed[a]; !bad {
				next = append(next, a)
			}
		}
		c.logger.Info("pooled round incomplete; asking the rest as a new round", "study", s.ID, "query", q.ID,
			"round", round, "cohort_size", len(cohort), "failed", len(failed))
		if len(next) == 1 {
			// A cohort of one is that node's own protected table, as its policy allows.
			return c.dispatchAlone(ctx, s, qi, approved, approving, next[0])
		}
		if len(next) == 0 {
			return missingOf(approving, nil), nil
		}
		cohort, round, answered = next, round+1, map[string]bool{}
	}
	return missingOf(approving, cohort), nil
}

// dispatchAlone asks one association for its own protected table of query qi, after a
// pooled cohort has shrunk to it.
func (c *Coordinator) dispatchAlone(ctx context.Context, s *study.Study, qi int, approved map[string]study.Approval, approving []string, assoc string) ([]string, error) {
	q := s.Queries[qi]
	n, ok := c.nodes[assoc]
	if !ok {
		return missingOf(approving, nil), nil
	}
	check := func(md map[string]string, rec arrow.Record, a string) ([]byte, error) {
		if err := checkProvenance(md, s.TicketStudy(), q, a); err != nil {
			return nil, err
		}
		return encode(rec)
	}
	got, _, err := c.runFanOut(ctx, s, qi, []fanout.Target{{Association: assoc, Node: n.Client,
		Ticket: c.ticketFunc(s, qi, assoc, approved[assoc], nil, 0)}}, nil, check, nil, c.o.Store.PutRound)
	if err != nil {
		return nil, err
	}
	if !got[assoc] {
		return missingOf(approving, nil), nil
	}
	return missingOf(approving, []string{assoc}), nil
}

// missingOf lists the approving associations outside cohort.
func missingOf(approving, cohort []string) []string {
	var out []string
	for _, a := range approving {
		if !slices.Contains(cohort, a) {
			out = append(out, a)
		}
	}
	return out
}

// checkContribution checks a node's answer to a pooled ticket and encodes it for the store.
func (c *Coordinator) checkContribution(md map[string]string, rec arrow.Record, studyID string, q study.Query, assoc string, cohort []string, round int, layout *disclosure.Layout) ([]byte, error) {
	if err := checkProvenance(md, studyID, q, assoc); err != nil {
		return nil, err
	}
	switch {
	case md[wire.MetaKind] != wire.KindContribution:
		return nil, fmt.Errorf("node %s answered a pooled ticket with %q, not a contribution", assoc, md[wire.MetaKind])
	case md[wire.MetaCohort] != strings.Join(cohort, ",") || md[wire.MetaRound] != strconv.Itoa(round):
		return nil, fmt.Errorf("node %s answered for another cohort or round", assoc)
	case md[wire.MetaLayout] != layout.Hash():
		return nil, fmt.Errorf("node %s contributed in layout %s, the coordinator's is %s (catalog versions differ)", assoc, md[wire.MetaLayout], layout.Hash())
	case rec.NumCols() != 1 || rec.ColumnName(0) != wire.ColMasked || int(rec.NumRows()) != layout.Len():
		return nil, fmt.Errorf("node %s sent a contribution of the wrong shape", assoc)
	}
	if _, ok := rec.Column(0).(*array.Uint64); !ok {
		return nil, fmt.Errorf("node %s sent a contribution that is not uint64", assoc)
	}
	return encode(rec)
}

// pooledResult sums the contributions of the latest complete round of query qi and protects
// the pooled cells once. It returns nil when no round is complete.
func (c *Coordinator) pooledResult(e *queries.Entry, dispatches []state.Dispatch, qi int) (arrow.Record, disclosure.Report, []string, map[string]string, error) {
	var rep disclosure.Report
	type group struct {
		cohort []string
		vecs   map[string][]byte
		snaps  map[string]string
	}
	groups := map[string]*group{}
	best, bestRound := "", 0
	for _, d := range dispatches {
		if d.QueryIndex != qi || d.State != state.DispatchReleased {
			continue
		}
		cohort, round := roundOf(d)
		key := strconv.Itoa(round) + "|" + strings.Join(cohort, ",")
		g := groups[key]
		if g == nil {
			g = &group{cohort: cohort, vecs: map[string][]byte{}, snaps: map[string]string{}}
			groups[key] = g
		}
		g.vecs[d.Association] = d.Release
		g.snaps[d.Association] = d.Metadata[wire.MetaSnapshot]
		if len(g.vecs) == len(g.cohort) && round > bestRound {
			best, bestRound = key, round
		}
	}
	if best == "" {
		return nil, rep, nil, nil, nil
	}
	g := groups[best]
	layout, err := e.Layout()
	if err != nil {
		return nil, rep, nil, nil, err
	}
	pooled, err := c.sumStored(g.cohort, g.vecs, layout.Len())
	if err != nil {
		return nil, rep, nil, nil, err
	}
	var out arrow.Record
	if e.IsAnalysis() && e.Analysis.Kind == queries.AnalysisSurvival {
		out, rep, err = disclosure.ProtectSurvival(c.o.Allocator, layout, pooled, disclosure.SurvivalThreshold, e.Coverage(c.Federation(), g.cohort))
	} else {
		out, rep, err = disclosure.ProtectPooled(c.o.Allocator, layout, pooled, c.o.Policy, e.Coverage(c.Federation(), g.cohort))
	}
	clear(pooled)
	if errors.Is(err, disclosure.ErrNoise) {
		return nil, rep, nil, nil, fmt.Errorf("%w: %v", errCheck, err)
	}
	return out, rep, g.cohort, g.snaps, err
}

// sumStored decodes the stored masked vectors of a whole cohort (each of length n) and
// returns their sum: the only way a round's contributions are ever combined.
func (c *Coordinator) sumStored(cohort []string, stored map[string][]byte, n int) ([]uint64, error) {
	vecs := make([][]uint64, 0, len(cohort))
	for _, a := range cohort {
		rec, err := decode(stored[a], c.o.Allocator)
		if err != nil {
			return nil, err
		}
		col, ok := rec.Column(0).(*array.Uint64)
		if !ok || col.Len() != n {
			rec.Release()
			return nil, fmt.Errorf("%w: a stored contribution of %s has the wrong shape", errCheck, a)
		}
		vecs = append(vecs, slices.Clone(col.Uint64Values()))
		rec.Release()
	}
	return secagg.Sum(vecs...)
}
