package executor

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/samsyn/samsyn/queries/disclosure"
)

// The node's statement gives every cell of every grouping set the participants' count and
// the sum of their record keys that a plain aggregate and Go's own record keys give.
func TestTheNodesAggregateAgreesWithAPlainOneAndGoRecordKeys(t *testing.T) {
	x, cat, _ := newExecutor(t, 2500)
	ctx := context.Background()
	checked := 0
	for _, id := range cat.IDs() {
		e, _ := cat.Get(id)
		if e.IsAnalysis() {
			continue
		}
		b, err := e.Bind(period)
		if err != nil {
			t.Fatal(err)
		}
		rec, _, err := x.aggregate(ctx, e, b)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		got := map[string][2]int64{}
		dimCols := len(e.Dimensions)
		for r := 0; r < int(rec.NumRows()); r++ {
			var parts []string
			for d := 0; d < dimCols; d++ {
				col := rec.Column(d)
				if col.IsNull(r) {
					parts = append(parts, "*")
				} else {
					parts = append(parts, col.ValueStr(r))
				}
			}
			k := strings.Join(parts, "|")
			if _, dup := got[k]; dup {
				t.Fatalf("%s: cell %s twice", id, k)
			}
			n := rec.Column(dimCols).ValueStr(r)
			ck := rec.Column(dimCols + 1).ValueStr(r)
			var nv, ckv int64
			fmt.Sscan(n, &nv)
			fmt.Sscan(ck, &ckv)
			got[k] = [2]int64{nv, ckv}
		}
		rec.Release()
		rows, err := x.store.DB().QueryContext(ctx, e.PlainSQL(true), b.Args()...)
		if err != nil {
			t.Fatalf("%s plain: %v", id, err)
		}
		want := 0
		for rows.Next() {
			vals := make([]any, dimCols+2)
			ptrs := make([]any, len(vals))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			var parts []string
			for d := 0; d < dimCols; d++ {
				if vals[d] == nil {
					parts = append(parts, "*")
				} else {
					parts = append(parts, fmt.Sprint(vals[d]))
				}
			}
			k := strings.Join(parts, "|")
			var sum uint32
			list := vals[dimCols+1].([]any)
			for _, pk := range list {
				sum += disclosure.RecordKey(secret, pk.(string))
			}
			g, ok := got[k]
			if !ok {
				t.Fatalf("%s: cell %s (n %v) missing from the node's aggregate", id, k, vals[dimCols])
			}
			if g[0] != vals[dimCols].(int64) || uint32(g[1]) != sum {
				t.Fatalf("%s %s: node n=%d key=%d, plain n=%v key=%d", id, k, g[0], g[1], vals[dimCols], sum)
			}
			want++
			checked++
		}
		rows.Close()
		if want != len(got) {
			t.Fatalf("%s: node %d cells, plain %d", id, len(got), want)
		}
	}
	if checked < 500 {
		t.Fatalf("only %d cells checked", checked)
	}
}
