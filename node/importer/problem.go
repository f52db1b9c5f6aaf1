package importer

import (
	"fmt"
	"strings"
)

// MaxProblems is how many problems an import reports in full; the rest are counted.
const MaxProblems = 50

// Problem is one thing wrong with an input file.
type Problem struct {
	File     string
	Line     int  // CSV: line in the file (1 is the header); Parquet: row number (1 is the first row)
	Row      bool // Line counts rows, not lines (Parquet)
	Column   string
	Found    string
	Expected string
}

func (p Problem) String() string {
	place := fmt.Sprintf("%s:%d", p.File, p.Line)
	if p.Row {
		place = fmt.Sprintf("%s:row %d", p.File, p.Line)
	}
	if p.Line == 0 {
		place = p.File
	}
	col := p.Column
	if col == "" {
		col = "-"
	}
	return fmt.Sprintf("%s: %s: %s: %s", place, col, p.Found, p.Expected)
}

// ValidationError is returned when any input row or file is invalid; nothing was written.
type ValidationError struct {
	Problems []Problem // the first MaxProblems, in file and line order
	Total    int       // all problems found
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "import refused, nothing was written: %d problem", e.Total)
	if e.Total != 1 {
		b.WriteString("s")
	}
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	if more := e.Total - len(e.Problems); more > 0 {
		fmt.Fprintf(&b, "\n  … and %d more", more)
	}
	return b.String()
}

// problems collects up to MaxProblems and counts the rest.
type problems struct {
	list  []Problem
	total int
}

func (ps *problems) add(p Problem) {
	ps.total++
	if len(ps.list) < MaxProblems {
		ps.list = append(ps.list, p)
	}
}

func (ps *problems) err() error {
	if ps.total == 0 {
		return nil
	}
	return &ValidationError{Problems: ps.list, Total: ps.total}
}
