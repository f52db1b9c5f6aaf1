package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/samsyn/samsyn/schemas/personnummer"
)

// Genesis is the prev of the first entry of every log.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// MaxLineSize bounds one line of the log, newline included.
const MaxLineSize = 1 << 20

// Entry is one line of the log. Seq, Time, Prev and Hash are set by the Writer.
type Entry struct {
	Seq    int64             `json:"seq"`    // 1, 2, 3, ...
	Time   time.Time         `json:"time"`   // UTC
	Actor  string            `json:"actor"`  // e.g. a coordinator key id, "local:<user>", "node:<id>"
	Action string            `json:"action"` // e.g. "release", "refuse", "import", "study.approve"
	Fields map[string]string `json:"fields,omitempty"`
	Prev   string            `json:"prev"` // Hash of the previous line; Genesis for the first
	Hash   string            `json:"hash"` // hex SHA-256 of the line's canonical JSON without hash
}

// body is Entry without its hash, in the same field order: what Hash is computed over.
type body struct {
	Seq    int64             `json:"seq"`
	Time   time.Time         `json:"time"`
	Actor  string            `json:"actor"`
	Action string            `json:"action"`
	Fields map[string]string `json:"fields,omitempty"`
	Prev   string            `json:"prev"`
}

func (e *Entry) computeHash() (string, error) {
	b, err := json.Marshal(body{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Fields: e.Fields, Prev: e.Prev})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// ChainError says where and how a log is broken. Line counts from 1; Seq is the seq the line
// claims, or 0 if it could not be read.
type ChainError struct {
	Line    int64
	Seq     int64
	Problem string
}

func (e *ChainError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Problem) }

var (
	// ErrLocked is returned by Open when another Writer, in this process or another, holds
	// the log.
	ErrLocked = errors.New("audit log is held by another writer")
	// ErrClosed is returned by Append after Close.
	ErrClosed = errors.New("audit log is closed")
	// ErrForbidden is returned by Append for an entry that looks like it carries participant
	// data or a secret.
	ErrForbidden = errors.New("audit entry must not hold participant data or secrets")
)

// forbiddenNames are fragments of field names that Append refuses: the values they suggest
// must never enter the log.
var forbiddenNames = []string{"personnummer", "pnr", "participant_key", "record_key", "secret", "password", "token", "private"}

func checkEntry(e *Entry) error {
	if e.Actor == "" || e.Action == "" {
		return errors.New("audit entry needs an actor and an action")
	}
	values := []struct{ name, v string }{{"actor", e.Actor}, {"action", e.Action}}
	for k, v := range e.Fields {
		if k == "" {
			return errors.New("audit entry has an empty field name")
		}
		lk := strings.ToLower(k)
		for _, f := range forbiddenNames {
			if strings.Contains(lk, f) {
				return fmt.Errorf("%w: field %q", ErrForbidden, k)
			}
		}
		values = append(values, struct{ name, v string }{"field " + k, v})
	}
	for _, nv := range values {
		if _, err := personnummer.Parse(strings.TrimSpace(nv.v)); err == nil {
			return fmt.Errorf("%w: %s is a personal identity number", ErrForbidden, nv.name)
		}
	}
	return nil
}

// Writer appends entries to one log file. It is safe for concurrent use.
type Writer struct {
	path string
	now  func() time.Time

	mu   sync.Mutex
	f    *os.File
	seq  int64
	hash string
	err  error // set after a failed write or sync: the file's end is then unknown

	// Group commit: appenders write under mu, then wait for an fsync that covers their line.
	// One fsync (syncMu) serves every line written before it started, so concurrent appends
	// share the disk's flush instead of queueing one each.
	syncMu sync.Mutex
	synced atomic.Int64 // the last seq known to be on disk
}

// Open opens the log at path, creating it with mode 0600 if it does not exist, and takes an
// exclusive lock on it: a second Open of the same file fails with ErrLocked until Close. It
// verifies the whole existing chain and refuses to append to a broken log.
func Open(path string) (*Writer, error) {
	created := false
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		created = true
	} else if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	if err := lockFile(f); err != nil {
		return nil, errors.Join(fmt.Errorf("open audit log %s: %w", path, err), f.Close())
	}
	if created {
		if err := syncDir(filepath.Dir(path)); err != nil {
			return nil, errors.Join(fmt.Errorf("open audit log %s: %w", path, err), f.Close())
		}
	}
	_, seq, hash, err := verify(f, nil)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open audit log %s: refusing to append to a broken chain: %w", path, err), f.Close())
	}
	w := &Writer{path: path, now: time.Now, f: f, seq: seq, hash: hash}
	w.synced.Store(seq)
	return w, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Append sets e's Seq, Time, Prev and Hash, writes it as one line and syncs the file before
// returning the entry as written (concurrent appends share one sync). Values the caller set in those four fields are ignored.
// After a failed write or sync the Writer refuses further entries: reopen the log, which
// verifies it, to continue.
func (w *Writer) Append(ctx context.Context, e Entry) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	if err := checkEntry(&e); err != nil {
		return Entry{}, fmt.Errorf("append to audit log: %w", err)
	}
	if e.Fields != nil {
		fields := make(map[string]string, len(e.Fields))
		for k, v := range e.Fields {
			fields[k] = v
		}
		e.Fields = fields
	}

	seq, err := w.write(&e)
	if err != nil {
		return Entry{}, err
	}
	if err := w.syncTo(seq); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// write chains e to the log and writes its line, without syncing; it returns e's seq.
func (w *Writer) write(e *Entry) (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, fmt.Errorf("append to audit log %s: %w", w.path, ErrClosed)
	}
	if w.err != nil {
		return 0, w.err
	}
	e.Seq = w.seq + 1
	e.Time = w.now().UTC()
	e.Prev = w.hash
	h, err := e.computeHash()
	if err != nil {
		return 0, fmt.Errorf("append to audit log %s: encode entry: %w", w.path, err)
	}
	e.Hash = h
	line, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("append to audit log %s: encode entry: %w", w.path, err)
	}
	line = append(line, '\n')
	if len(line) > MaxLineSize {
		return 0, fmt.Errorf("append to audit log %s: entry of %d bytes, more than %d", w.path, len(line), MaxLineSize)
	}
	if _, err := w.f.Write(line); err != nil {
		w.err = fmt.Errorf("append to audit log %s: write: %w (the log may end in a partial line; verify it before reopening)", w.path, err)
		return 0, w.err
	}
	w.seq, w.hash = e.Seq, e.Hash
	return e.Seq, nil
}

// syncTo returns once the line of seq is on disk, syncing the file unless a sync that
// started after that line was written has done it already.
func (w *Writer) syncTo(seq int64) error {
	if w.synced.Load() >= seq {
		return nil
	}
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	if w.synced.Load() >= seq {
		return nil
	}
	w.mu.Lock()
	f, upTo, err := w.f, w.seq, w.err
	w.mu.Unlock()
	switch {
	case err != nil:
		return err
	case f == nil:
		return fmt.Errorf("append to audit log %s: %w", w.path, ErrClosed)
	}
	if err := f.Sync(); err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = fmt.Errorf("append to audit log %s: sync: %w", w.path, err)
		}
		err = w.err
		w.mu.Unlock()
		return err
	}
	w.synced.Store(upTo)
	return nil
}

// Head returns the seq and hash of the last entry (0 and Genesis for an empty log). Recording
// it outside the log anchors the chain against a cut or rewritten tail.
func (w *Writer) Head() (seq int64, hash string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seq, w.hash
}

// Close releases the lock and closes the file. Closing twice is harmless.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return fmt.Errorf("close audit log %s: %w", w.path, err)
	}
	return nil
}

// VerifyFile verifies the log at path; see Verify. It takes no lock, so it can check a log
// that a running daemon is appending to.
func VerifyFile(path string) (n int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("verify audit log: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("verify audit log: %w", cerr)
		}
	}()
	n, err = Verify(f)
	if err != nil {
		return n, fmt.Errorf("verify audit log %s: %w", path, err)
	}
	return n, nil
}

// Verify reads a whole log and returns the number of entries. The first problem found is
// returned as a *ChainError naming the line: a line that is not valid JSON or not an entry, a
// hash that does not match the line's content, a line not in the form the Writer writes, a
// seq that does not follow the previous one, a prev that is not the previous line's hash, or
// a last line without its newline. Other errors are read errors.
func Verify(r io.Reader) (n int64, err error) {
	n, _, _, err = verify(r, nil)
	return n, err
}

// ScanFile verifies the log at path as VerifyFile does and hands each sound entry to fn, in
// order; a node rebuilds what it must remember across restarts from its own log this way.
// A missing file is an empty log.
func ScanFile(path string, fn func(Entry)) (err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("scan audit log: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("scan audit log: %w", cerr)
		}
	}()
	if _, _, _, err = verify(f, fn); err != nil {
		return fmt.Errorf("scan audit log %s: %w", path, err)
	}
	return nil
}

// verify returns the entry count and the last seq and hash, handing each entry to fn.
func verify(r io.Reader, fn func(Entry)) (n, lastSeq int64, lastHash string, err error) {
	lr := lineReader{r: bufio.NewReaderSize(r, 64<<10)}
	lastHash = Genesis
	for {
		line, complete, err := lr.next()
		if err == io.EOF {
			return n, lastSeq, lastHash, nil
		}
		lineNo := n + 1
		if err != nil {
			var ce *ChainError
			if errors.As(err, &ce) {
				ce.Line = lineNo
				return n, lastSeq, lastHash, ce
			}
			return n, lastSeq, lastHash, fmt.Errorf("read line %d: %w", lineNo, err)
		}
		if !complete {
			return n, lastSeq, lastHash, &ChainError{Line: lineNo, Problem: "no newline at the end: the last line was cut short (truncated)"}
		}
		e, problem := parseLine(line)
		if problem != "" {
			return n, lastSeq, lastHash, &ChainError{Line: lineNo, Seq: e.Seq, Problem: problem}
		}
		if e.Seq != lastSeq+1 {
			return n, lastSeq, lastHash, &ChainError{Line: lineNo, Seq: e.Seq, Problem: seqProblem(e.Seq, lastSeq, lr.peekSeq())}
		}
		if e.Prev != lastHash {
			problem := fmt.Sprintf("prev does not match line %d's hash (inserted or reordered)", n)
			if n == 0 {
				problem = "prev of the first line is not the genesis hash (lines were removed from the start)"
			}
			return n, lastSeq, lastHash, &ChainError{Line: lineNo, Seq: e.Seq, Problem: problem}
		}
		n, lastSeq, lastHash = lineNo, e.Seq, e.Hash
		if fn != nil {
			fn(e)
		}
	}
}

// seqProblem explains a seq that does not follow prev, using the seq of the next line (next,
// or -1 if unknown) to tell a removal from a reordering or an insertion.
func seqProblem(seq, prev, next int64) string {
	want := prev + 1
	var why string
	switch {
	case seq > want && next == seq+1:
		why = "a line was removed"
		if seq > want+1 {
			why = "lines were removed"
		}
	case seq > want && next == want:
		why = "lines were reordered"
	case seq > want:
		why = "lines were removed or reordered"
	case next == want:
		why = "a line was inserted"
	default:
		why = "a line was inserted or reordered"
	}
	return fmt.Sprintf("seq %d follows %d (%s)", seq, prev, why)
}

// parseLine decodes and checks one line on its own; problem is "" if it is a sound entry.
func parseLine(line []byte) (e Entry, problem string) {
	if len(line) == 0 {
		return e, "empty line"
	}
	if !json.Valid(line) {
		return e, "not valid JSON"
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Entry{}, fmt.Sprintf("not an audit entry: %v", err)
	}
	h, err := e.computeHash()
	if err != nil {
		return e, fmt.Sprintf("not an audit entry: %v", err)
	}
	if h != e.Hash {
		return e, "hash does not match its content (modified)"
	}
	canon, err := json.Marshal(e)
	if err != nil || !bytes.Equal(canon, line) {
		return e, "not in the form the writer writes (modified)"
	}
	return e, ""
}

// lineReader yields lines without their newline, bounded by MaxLineSize.
type lineReader struct {
	r       *bufio.Reader
	peeked  bool
	pLine   []byte
	pDone   bool
	pErr    error
	scratch []byte
}

// next returns the next line; complete is false for a last line without a newline.
func (lr *lineReader) next() (line []byte, complete bool, err error) {
	if lr.peeked {
		lr.peeked = false
		return lr.pLine, lr.pDone, lr.pErr
	}
	return lr.read()
}

func (lr *lineReader) read() ([]byte, bool, error) {
	lr.scratch = lr.scratch[:0]
	for {
		chunk, err := lr.r.ReadSlice('\n')
		lr.scratch = append(lr.scratch, chunk...)
		if len(lr.scratch) > MaxLineSize {
			return nil, false, &ChainError{Problem: fmt.Sprintf("longer than %d bytes", MaxLineSize)}
		}
		switch {
		case err == nil:
			return bytes.Clone(lr.scratch[:len(lr.scratch)-1]), true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(lr.scratch) > 0:
			return bytes.Clone(lr.scratch), false, nil
		default:
			return nil, false, err
		}
	}
}

// peekSeq returns the seq of the next line if it parses as an entry, else -1.
func (lr *lineReader) peekSeq() int64 {
	if !lr.peeked {
		lr.pLine, lr.pDone, lr.pErr = lr.read()
		lr.peeked = true
	}
	if lr.pErr != nil {
		return -1
	}
	var s struct {
		Seq *int64 `json:"seq"`
	}
	if json.Unmarshal(lr.pLine, &s) != nil || s.Seq == nil {
		return -1
	}
	return *s.Seq
}

// ErrAnchor is returned when a log does not hold an entry another party saw in it: entries
// were removed from its end, or its history was rewritten.
var ErrAnchor = errors.New("the audit log does not match its anchor")

// CheckAnchor verifies the log at path and that it holds entry seq with hash: the head a
// node reported to the coordinator with a release. A log cut short below seq, or rewritten,
// fails, even where its own chain is intact.
func CheckAnchor(path string, seq int64, hash string) error {
	var found *Entry
	var last int64
	err := ScanFile(path, func(e Entry) {
		last = e.Seq
		if e.Seq == seq {
			found = &e
		}
	})
	if err != nil {
		return err
	}
	switch {
	case found == nil:
		return fmt.Errorf("%w: the coordinator saw entry %d, the log ends at %d: entries were removed from its end", ErrAnchor, seq, last)
	case found.Hash != hash:
		return fmt.Errorf("%w: entry %d has hash %s, the coordinator saw %s: the log was rewritten", ErrAnchor, seq, found.Hash, hash)
	}
	return nil
}
