package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/samsyn/samsyn/coordinator/study"
)

// Standing studies: approved once for a stated period, rerun on a schedule. Each rerun is a
// study of its own (ID-rK), run on the parent's approvals (the data owners signed the parent's
// id and the last day their approval holds, and every node checks both), released and
// audited like any other. A revoked or expired approval stops the reruns for that
// association; the nodes refuse a run after the date whatever the coordinator does.

// ErrNotStanding refuses a revocation of a study that is not standing.
var ErrNotStanding = errors.New("not a standing study")

// Revoke withdraws association's standing approval of study id: no later run asks it.
func (c *Coordinator) Revoke(ctx context.Context, id, association string) error {
	s, err := c.o.Store.Study(ctx, id)
	if err != nil {
		return err
	}
	if s.Standing == nil || s.Parent != "" {
		return fmt.Errorf("%w: %s", ErrNotStanding, id)
	}
	if !slices.Contains(s.Associations, association) {
		return fmt.Errorf("%w: study %s does not ask %s", study.ErrInvalid, id, association)
	}
	if err := c.o.Store.Revoke(ctx, id, association, time.Now()); err != nil {
		return err
	}
	c.audit(ctx, "association:"+association, "study.revoked", map[string]string{"study": id, "association": association})
	return nil
}

// RerunStanding starts the due reruns of standing studies as of now (force: every standing
// study still in force, due or not) and returns the ids of the runs it started.
func (c *Coordinator) RerunStanding(ctx context.Context, now time.Time, force bool) ([]string, error) {
	all, err := c.o.Store.Studies(ctx, "")
	if err != nil {
		return nil, err
	}
	latest := map[string]*study.Study{}
	for _, s := range all {
		if s.Parent != "" && (latest[s.Parent] == nil || s.Run > latest[s.Parent].Run) {
			latest[s.Parent] = s
		}
	}
	var started []string
	for _, s := range all {
		if s.Standing == nil || s.Parent != "" || s.State != study.Released || now.After(s.Standing.Until) {
			continue
		}
		last := latest[s.ID]
		if last == nil {
			last = s
		}
		if !last.State.Final() {
			continue // a run is under way
		}
		due := force
		switch s.Standing.Schedule {
		case study.ScheduleQuarterly:
			due = due || quarter(now) != quarter(last.CreatedAt)
		case study.ScheduleNewData:
			due = due || c.dataChanged(ctx, last)
		}
		if !due {
			continue
		}
		id, err := c.startRun(ctx, s, last.Run+1, now)
		if err != nil {
			return started, err
		}
		if id != "" {
			started = append(started, id)
		}
	}
	if len(started) > 0 {
		c.Wake()
	}
	return started, nil
}

func quarter(t time.Time) string {
	t = t.UTC()
	return strconv.Itoa(t.Year()) + "Q" + strconv.Itoa((int(t.Month())-1)/3+1)
}

// dataChanged reports whether a node that answered run last now holds another data
// snapshot than the one it answered from.
func (c *Coordinator) dataChanged(ctx context.Context, last *study.Study) bool {
	results, err := c.o.Store.Results(ctx, last.ID)
	if err != nil || len(results) == 0 {
		return false
	}
	var ch Checks
	if json.Unmarshal(results[0].Checks, &ch) != nil {
		return false
	}
	for assoc, snap := range ch.NodeSnapshots {
		n, ok := c.nodes[assoc]
		if !ok || n.Status == nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := n.Status(sctx)
		cancel()
		if err == nil && st != nil && st.Snapshot != "" && st.Snapshot != snap {
			return true
		}
	}
	return false
}

// startRun creates run k of the standing study parent on its approvals still in force.
func (c *Coordinator) startRun(ctx context.Context, parent *study.Study, k int, now time.Time) (string, error) {
	approvals, err := c.o.Store.Approvals(ctx, parent.ID)
	if err != nil {
		return "", err
	}
	var keep []study.Approval
	var assocs []string
	for _, a := range approvals {
		if _, revoked := parent.Revoked[a.Association]; a.Decision == study.Approve && !revoked {
			keep = append(keep, a)
			assocs = append(assocs, a.Association)
		}
	}
	if len(keep) == 0 {
		return "", nil
	}
	if hasModel(c, parent) && len(keep) < 2 {
		return "", nil
	}
	run := &study.Study{ID: parent.ID + "-r" + strconv.Itoa(k), Title: parent.Title, Purpose: parent.Purpose, Evaluator: parent.Evaluator,
		Queries: parent.Queries, Associations: assocs, OnNodeFailure: parent.OnNodeFailure, State: study.Submitted, CreatedAt: now.UTC(),
		Standing: parent.Standing, Parent: parent.ID, Run: k}
	if err := c.o.Store.CreateStudy(ctx, run, "coordinator"); err != nil {
		return "", err
	}
	for _, a := range keep {
		if err := c.o.Store.PutApproval(ctx, run.ID, a); err != nil {
			return "", err
		}
	}
	note := fmt.Sprintf("standing run %d of %s", k, parent.ID)
	if err := c.o.Store.Move(ctx, run.ID, study.Submitted, study.AwaitingApproval, "coordinator", note); err != nil {
		return "", err
	}
	if err := c.o.Store.Move(ctx, run.ID, study.AwaitingApproval, study.Running, "coordinator", note); err != nil {
		return "", err
	}
	c.audit(ctx, "coordinator", "study.rerun", map[string]string{"study": run.ID, "parent": parent.ID, "run": strconv.Itoa(k)})
	c.logger.Info("standing study rerun", "study", run.ID, "parent", parent.ID, "associations", len(assocs))
	return run.ID, nil
}

func hasModel(c *Coordinator, s *study.Study) bool {
	for _, q := range s.Queries {
		if e, ok := c.o.Catalog.Get(q.ID); ok && e.IsAnalysis() && e.Analysis.Kind == "logit" {
			return true
		}
	}
	return false
}
