package proc

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// Progress draws one self-overwriting status line on a terminal and stays silent when the
// writer is not a terminal, so scripts and logs get only the final summary.
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	on    bool
	start time.Time
	last  time.Time
	width int
}

// NewProgress returns a Progress that draws only if w is a terminal.
func NewProgress(w io.Writer) *Progress {
	f, ok := w.(*os.File)
	return &Progress{w: w, on: ok && term.IsTerminal(int(f.Fd())), start: time.Now()}
}

// Update reports done of total units (total ≤ 0 when unknown) for the phase. It redraws at
// most ten times a second.
func (p *Progress) Update(phase string, done, total int64) {
	if p == nil || !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && done != total {
		return
	}
	p.last = now
	rate := float64(done) / now.Sub(p.start).Seconds()
	line := fmt.Sprintf("%s: %d rows, %.0f rows/s", phase, done, rate)
	if total > 0 {
		line = fmt.Sprintf("%s: %d/%d rows (%.0f %%), %.0f rows/s", phase, done, total, 100*float64(done)/float64(total), rate)
	}
	pad := p.width - len(line)
	p.width = len(line)
	if pad < 0 {
		pad = 0
	}
	fmt.Fprintf(p.w, "\r%s%*s", line, pad, "")
}

// Done clears the status line.
func (p *Progress) Done() {
	if p == nil || !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "\r%*s\r", p.width, "")
	p.width = 0
}
