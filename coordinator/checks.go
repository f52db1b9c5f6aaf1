package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/samsyn/samsyn/coordinator/merge"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/wire"
)

var errCheck = errors.New("output check failed")

// Checks is what the output check found, stored and shown with a result.
type Checks struct {
	Rows              int               `json:"rows"`
	Bytes             int               `json:"bytes"`
	Cells             int               `json:"cells"`
	Suppressed        int               `json:"suppressed"`
	SuppressedShare   float64           `json:"suppressed_share"`
	Associations      []string          `json:"associations"`
	Missing           []string          `json:"missing_associations"`
	Partial           bool              `json:"partial"`
	Disclosure        json.RawMessage   `json:"disclosure"`
	NodeSnapshots     map[string]string `json:"node_snapshots"`
	StructuralZeros   int               `json:"structural_zeros"`
	Limits            map[string]int    `json:"limits"`
	DerivedRatesBasis string            `json:"derived_rates_basis"`
	// Pooled is true when the table was protected once, after a secure sum of the cohort's
	// perturbed cells; false for a cohort of one (the node's own protected table).
	Pooled bool `json:"pooled"`
	// Model summarises a released model (nil for a table).
	Model *Model `json:"model,omitempty"`
}

// check merges every query's node tables, runs the output checks and stores the results.
// It returns the queries no node released (each node refused them, e.g. as too sparse); a
// study with no released query at all fails.
func (c *Coordinator) check(ctx context.Context, s *study.Study, order []string) ([]string, error) {
	dispatches, err := c.o.Store.Dispatches(ctx, s.ID)
	if err != nil {
		return nil, err
	}
	var withheld []string
	for qi, q := range s.Queries {
		e, ok := c.o.Catalog.Get(q.ID)
		if !ok {
			return nil, fmt.Errorf("%w: query %s left the catalog", errCheck, q.ID)
		}
		var (
			model   *Model
			table   arrow.Record
			cells   int
			supp    int
			structZ int
			present []string
			snaps   map[string]string
			pooled  = len(order) >= 2
		)
		if e.IsAnalysis() && e.Analysis.Kind == queries.AnalysisLogit {
			out, m, cohort, sn, err := c.modelResult(e, q, dispatches, qi)
			switch {
			case errors.Is(err, errModelWithheld):
				c.logger.Info("model withheld", "study", s.ID, "query", q.ID, "reason", err)
				withheld = append(withheld, q.ID)
				continue
			case err != nil:
				return nil, err
			case out == nil:
				withheld = append(withheld, q.ID)
				continue
			}
			table, cells, present, snaps, model, pooled = out, int(out.NumRows()), cohort, sn, m, true
		} else if pooled {
			out, rep, cohort, sn, err := c.pooledResult(e, dispatches, qi)
			switch {
			case errors.Is(err, disclosure.ErrTooSparse):
				c.logger.Info("pooled table refused as too sparse", "study", s.ID, "query", q.ID)
				withheld = append(withheld, q.ID)
				continue
			case err != nil:
				return nil, err
			case out != nil:
				table, cells, supp, structZ, present, snaps = out, rep.Cells, rep.Suppressed, rep.StructuralZeros, cohort, sn
			default:
				pooled = false // no whole round: a node's own table, if a cohort shrank to one
			}
		}
		if table == nil {
			var inputs []merge.Input
			snaps = map[string]string{}
			for _, d := range dispatches {
				if d.QueryIndex != qi || d.State != state.DispatchReleased || d.Metadata[wire.MetaKind] == wire.KindContribution {
					continue
				}
				rec, err := decode(d.Release, c.o.Allocator)
				if err != nil {
					return nil, err
				}
				defer rec.Release()
				inputs = append(inputs, merge.Input{Association: d.Association, Table: rec})
				snaps[d.Association] = d.Metadata[wire.MetaSnapshot]
				present = append(present, d.Association)
			}
			if len(inputs) == 0 {
				withheld = append(withheld, q.ID)
				continue
			}
			if e.IsAnalysis() && e.Analysis.Kind == queries.AnalysisSurvival {
				// A node's own survival table is released as the node protected it; curves of
				// several nodes are not merged here (they are pooled before protection).
				if len(inputs) != 1 {
					withheld = append(withheld, q.ID)
					continue
				}
				inputs[0].Table.Retain()
				table, cells = inputs[0].Table, int(inputs[0].Table.NumRows())
			} else {
				merged, rep, err := merge.Merge(c.o.Allocator, e.Spec(""), inputs, c.o.Policy, e.Coverage(c.Federation(), present))
				if err != nil {
					return nil, fmt.Errorf("%w: %v", errCheck, err)
				}
				table, cells, supp, structZ = merged, rep.Cells, rep.Suppressed, rep.StructuralZeros
			}
		}
		var missing []string
		for _, a := range order {
			if !slices.Contains(present, a) {
				missing = append(missing, a)
			}
		}
		disc := c.o.Policy.Params()
		if pooled {
			disc = c.o.Policy.PooledParams()
		}
		raw, err := wire.EncodeIPC(table, wire.Provenance{Study: s.ID, QueryID: q.ID, QueryHash: q.Hash, Associations: present,
			Missing: missing, Pooled: pooled, Disclosure: disc}.Metadata())
		table.Release()
		if err != nil {
			return nil, err
		}
		ch := Checks{Rows: cells, Bytes: len(raw), Cells: cells, Suppressed: supp, StructuralZeros: structZ,
			Associations: present, Missing: missing, Partial: len(missing) > 0, Disclosure: json.RawMessage(disc),
			NodeSnapshots: snaps, Limits: map[string]int{"max_rows": c.o.MaxRows, "max_bytes": c.o.MaxBytes},
			DerivedRatesBasis: "released counts only", Pooled: pooled, Model: model}
		if nonStructural := cells - structZ; nonStructural > 0 {
			ch.SuppressedShare = float64(supp) / float64(nonStructural)
		}
		if ch.Missing == nil {
			ch.Missing = []string{}
		}
		if ch.Rows > c.o.MaxRows || ch.Bytes > c.o.MaxBytes {
			return nil, fmt.Errorf("%w: %s has %d rows, %d bytes (limits %d, %d)", errCheck, q.ID, ch.Rows, ch.Bytes, c.o.MaxRows, c.o.MaxBytes)
		}
		checks, err := json.Marshal(ch)
		if err != nil {
			return nil, err
		}
		if err := c.o.Store.PutResult(ctx, s.ID, state.Result{QueryIndex: qi, QueryID: q.ID, Release: raw, Checks: checks, ReleasedAt: time.Now()}); err != nil {
			return nil, err
		}
		c.released.Inc()
		c.suppressed.Add(float64(supp))
	}
	if len(withheld) == len(s.Queries) {
		return withheld, fmt.Errorf("%w: no query of the study could be released", errCheck)
	}
	return withheld, nil
}
