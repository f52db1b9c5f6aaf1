package nodeclient

import (
	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

func ipcAllocator(a memory.Allocator) ipc.Option { return ipc.WithAllocator(a) }

// concat joins the stream's batches into one record (a release is small).
func concat(mem memory.Allocator, sc *arrow.Schema, recs []arrow.Record) (arrow.Record, error) {
	if len(recs) == 1 {
		recs[0].Retain()
		return recs[0], nil
	}
	b := array.NewRecordBuilder(mem, sc)
	defer b.Release()
	if len(recs) == 0 {
		return b.NewRecord(), nil
	}
	tbl := array.NewTableFromRecords(sc, recs)
	defer tbl.Release()
	cols := make([]arrow.Array, tbl.NumCols())
	for i := range cols {
		chunks := tbl.Column(i).Data().Chunks()
		a, err := array.Concatenate(chunks, mem)
		if err != nil {
			for _, c := range cols[:i] {
				c.Release()
			}
			return nil, err
		}
		cols[i] = a
	}
	rec := array.NewRecord(sc, cols, tbl.NumRows())
	for _, c := range cols {
		c.Release()
	}
	return rec, nil
}
