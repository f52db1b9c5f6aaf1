package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func openLog(t *testing.T, path string) *Writer {
	t.Helper()
	w, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func appendN(t *testing.T, w *Writer, n int) []Entry {
	t.Helper()
	var out []Entry
	for i := range n {
		e, err := w.Append(context.Background(), Entry{
			Actor:  "node:ostra-sodertorn",
			Action: "release",
			Fields: map[string]string{"query": "exits_by_municipality", "cells": strconv.Itoa(10 + i)},
		})
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		out = append(out, e)
	}
	return out
}

// newLog writes a log of n entries and returns its path and lines (without newlines).
func newLog(t *testing.T, n int) (string, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	w := openLog(t, path)
	appendN(t, w, n)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
}

func joinLines(lines []string) []byte { return []byte(strings.Join(lines, "\n") + "\n") }

func TestAppendAndVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w := openLog(t, path)
	entries := appendN(t, w, 10)
	for i, e := range entries {
		if e.Seq != int64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
		if e.Time.Location() != time.UTC {
			t.Fatalf("entry %d time not UTC: %v", i, e.Time)
		}
	}
	if entries[0].Prev != Genesis {
		t.Fatalf("first prev %q", entries[0].Prev)
	}
	if entries[5].Prev != entries[4].Hash {
		t.Fatal("entries are not chained")
	}
	if seq, hash := w.Head(); seq != 10 || hash != entries[9].Hash {
		t.Fatalf("Head = %d %s", seq, hash)
	}
	n, err := VerifyFile(path)
	if err != nil || n != 10 {
		t.Fatalf("VerifyFile = %d, %v", n, err)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var first Entry
	if err := json.Unmarshal(bytes.SplitN(raw, []byte("\n"), 2)[0], &first); err != nil {
		t.Fatal(err)
	}
	if !first.Time.Equal(entries[0].Time) || first.Hash != entries[0].Hash || first.Fields["cells"] != "10" {
		t.Fatalf("the line on disk differs from the entry Append returned: %+v", first)
	}
}

func TestVerifyEmpty(t *testing.T) {
	if n, err := Verify(strings.NewReader("")); n != 0 || err != nil {
		t.Fatalf("Verify(empty) = %d, %v", n, err)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	const n = 10
	tests := []struct {
		name    string
		tamper  func(t *testing.T, lines []string) []byte
		line    int64
		problem string
	}{
		{
			name: "a field value modified",
			tamper: func(_ *testing.T, l []string) []byte {
				l[4] = strings.Replace(l[4], `"cells":"14"`, `"cells":"41"`, 1)
				return joinLines(l)
			},
			line: 5, problem: "hash does not match its content (modified)",
		},
		{
			name: "the actor modified",
			tamper: func(_ *testing.T, l []string) []byte {
				l[6] = strings.Replace(l[6], "node:ostra-sodertorn", "node:hbs", 1)
				return joinLines(l)
			},
			line: 7, problem: "(modified)",
		},
		{
			name:   "a line deleted",
			tamper: func(_ *testing.T, l []string) []byte { return joinLines(append(l[:6:6], l[7:]...)) },
			line:   7, problem: "seq 8 follows 6 (a line was removed)",
		},
		{
			name:   "two lines deleted",
			tamper: func(_ *testing.T, l []string) []byte { return joinLines(append(l[:3:3], l[5:]...)) },
			line:   4, problem: "seq 6 follows 3 (lines were removed)",
		},
		{
			name:   "the first line deleted",
			tamper: func(_ *testing.T, l []string) []byte { return joinLines(l[1:]) },
			line:   1, problem: "seq 2 follows 0 (a line was removed)",
		},
		{
			name: "a copied line inserted",
			tamper: func(_ *testing.T, l []string) []byte {
				out := append(append(append([]string{}, l[:5]...), l[1]), l[5:]...)
				return joinLines(out)
			},
			line: 6, problem: "seq 2 follows 5 (a line was inserted)",
		},
		{
			name: "the last line duplicated",
			tamper: func(_ *testing.T, l []string) []byte {
				return joinLines(append(l, l[n-1]))
			},
			line: n + 1, problem: "seq 10 follows 10 (a line was inserted or reordered)",
		},
		{
			name: "two lines swapped",
			tamper: func(_ *testing.T, l []string) []byte {
				l[3], l[4] = l[4], l[3]
				return joinLines(l)
			},
			line: 4, problem: "seq 5 follows 3 (lines were reordered)",
		},
		{
			name: "truncated mid-line",
			tamper: func(_ *testing.T, l []string) []byte {
				b := joinLines(l[:7])
				return b[:len(b)-1-len(l[6])/2]
			},
			line: 7, problem: "truncated",
		},
		{
			name: "truncated before the last newline",
			tamper: func(_ *testing.T, l []string) []byte {
				b := joinLines(l)
				return b[:len(b)-1]
			},
			line: n, problem: "truncated",
		},
		{
			name: "a hash and the next prev changed consistently",
			tamper: func(_ *testing.T, l []string) []byte {
				var e Entry
				if err := json.Unmarshal([]byte(l[4]), &e); err != nil {
					panic(err)
				}
				forged := strings.Repeat("ab", 32)
				l[4] = strings.Replace(l[4], e.Hash, forged, 1)
				l[5] = strings.Replace(l[5], e.Hash, forged, 1)
				return joinLines(l)
			},
			line: 5, problem: "hash does not match its content (modified)",
		},
		{
			name: "content changed and its own hash recomputed",
			tamper: func(t *testing.T, l []string) []byte {
				var e Entry
				if err := json.Unmarshal([]byte(l[4]), &e); err != nil {
					t.Fatal(err)
				}
				e.Fields["cells"] = "0"
				h, err := e.computeHash()
				if err != nil {
					t.Fatal(err)
				}
				e.Hash = h
				b, err := json.Marshal(e)
				if err != nil {
					t.Fatal(err)
				}
				l[4] = string(b)
				return joinLines(l)
			},
			line: 6, problem: "prev does not match line 5's hash (inserted or reordered)",
		},
		{
			name:   "a line that is not JSON",
			tamper: func(_ *testing.T, l []string) []byte { l[2] = l[2][:20]; return joinLines(l) },
			line:   3, problem: "not valid JSON",
		},
		{
			name:   "an empty line",
			tamper: func(_ *testing.T, l []string) []byte { l[2] = ""; return joinLines(l) },
			line:   3, problem: "empty line",
		},
		{
			name: "a line reformatted with the same content",
			tamper: func(_ *testing.T, l []string) []byte {
				l[1] = strings.Replace(l[1], `"seq":2`, `"seq": 2`, 1)
				return joinLines(l)
			},
			line: 2, problem: "not in the form the writer writes (modified)",
		},
		{
			name: "an unknown field added",
			tamper: func(_ *testing.T, l []string) []byte {
				l[1] = strings.TrimSuffix(l[1], "}") + `,"note":"x"}`
				return joinLines(l)
			},
			line: 2, problem: "not an audit entry",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, lines := newLog(t, n)
			if err := os.WriteFile(path, tc.tamper(t, lines), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := VerifyFile(path)
			var ce *ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("VerifyFile error = %v, want a *ChainError", err)
			}
			if ce.Line != tc.line || !strings.Contains(ce.Problem, tc.problem) {
				t.Fatalf("got %q, want line %d: ...%s...", ce.Error(), tc.line, tc.problem)
			}
			if !strings.HasPrefix(ce.Error(), fmt.Sprintf("line %d: ", tc.line)) {
				t.Fatalf("message %q does not start with the line", ce.Error())
			}

			// A writer must refuse to extend the broken log.
			if w, err := Open(path); err == nil {
				_ = w.Close()
				t.Fatal("Open accepted a broken log")
			} else if !errors.As(err, &ce) {
				t.Fatalf("Open error = %v, want the chain error", err)
			}
		})
	}
}

func TestConcurrentAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w := openLog(t, path)
	const goroutines, each = 8, 50
	var wg sync.WaitGroup
	seqs := make(chan int64, goroutines*each)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e, err := w.Append(context.Background(), Entry{Actor: fmt.Sprintf("local:g%d", g), Action: "import", Fields: map[string]string{"i": strconv.Itoa(i)}})
				if err != nil {
					t.Error(err)
					return
				}
				seqs <- e.Seq
			}
		}()
	}
	wg.Wait()
	close(seqs)
	seen := map[int64]bool{}
	for s := range seqs {
		if seen[s] {
			t.Fatalf("seq %d given twice", s)
		}
		seen[s] = true
	}
	n, err := VerifyFile(path)
	if err != nil || n != goroutines*each {
		t.Fatalf("VerifyFile = %d, %v; want %d entries", n, err, goroutines*each)
	}
}

func TestReopenContinuesTheChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	first := appendN(t, w, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = openLog(t, path)
	if seq, hash := w.Head(); seq != 3 || hash != first[2].Hash {
		t.Fatalf("reopened Head = %d %s, want 3 %s", seq, hash, first[2].Hash)
	}
	next := appendN(t, w, 2)
	if next[0].Seq != 4 || next[0].Prev != first[2].Hash {
		t.Fatalf("reopened log starts at seq %d prev %s", next[0].Seq, next[0].Prev)
	}
	if n, err := VerifyFile(path); err != nil || n != 5 {
		t.Fatalf("VerifyFile = %d, %v", n, err)
	}
}

func TestSecondOpenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w := openLog(t, path)
	if w2, err := Open(path); !errors.Is(err, ErrLocked) {
		if err == nil {
			_ = w2.Close()
		}
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w3 := openLog(t, path) // released by Close
	appendN(t, w3, 1)
}

// TestSecondOpenFailsInAnotherProcess runs this test binary as the other process.
func TestSecondOpenFailsInAnotherProcess(t *testing.T) {
	if path := os.Getenv("SAMSYN_AUDIT_LOCK_CHILD"); path != "" {
		w, err := Open(path)
		if err == nil {
			_ = w.Close()
			fmt.Print("opened")
			return
		}
		if errors.Is(err, ErrLocked) {
			fmt.Print("locked")
			return
		}
		fmt.Printf("error: %v", err)
		return
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	openLog(t, path)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecondOpenFailsInAnotherProcess$")
	cmd.Env = append(os.Environ(), "SAMSYN_AUDIT_LOCK_CHILD="+path)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !bytes.HasPrefix(out, []byte("locked")) {
		t.Fatalf("child process said %q, want locked", out)
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	openLog(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestAppendRefuses(t *testing.T) {
	w := openLog(t, filepath.Join(t.TempDir(), "audit.log"))
	tests := []struct {
		name  string
		entry Entry
		want  error
	}{
		{"no actor", Entry{Action: "release"}, nil},
		{"no action", Entry{Actor: "node:x"}, nil},
		{"participant key field", Entry{Actor: "node:x", Action: "import", Fields: map[string]string{"participant_key": "ab12"}}, ErrForbidden},
		{"token field", Entry{Actor: "node:x", Action: "login", Fields: map[string]string{"Bearer_Token": "x"}}, ErrForbidden},
		{"personal identity number value", Entry{Actor: "node:x", Action: "import", Fields: map[string]string{"note": "19121212-1212"}}, ErrForbidden},
		{"personal identity number actor", Entry{Actor: "191212121212", Action: "import"}, ErrForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.Append(context.Background(), tc.entry)
			if err == nil {
				t.Fatal("Append accepted the entry")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), "1212121") {
				t.Fatalf("the error repeats the value: %v", err)
			}
		})
	}
	if seq, _ := w.Head(); seq != 0 {
		t.Fatalf("refused entries were written: head seq %d", seq)
	}
}

func TestAppendAfterCloseAndCancel(t *testing.T) {
	w, err := Open(filepath.Join(t.TempDir(), "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Append(ctx, Entry{Actor: "a", Action: "b"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Append(context.Background(), Entry{Actor: "a", Action: "b"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
}

func TestAppendDoesNotAliasFields(t *testing.T) {
	w := openLog(t, filepath.Join(t.TempDir(), "audit.log"))
	fields := map[string]string{"query": "q"}
	e, err := w.Append(context.Background(), Entry{Actor: "a", Action: "b", Fields: fields})
	if err != nil {
		t.Fatal(err)
	}
	fields["query"] = "changed"
	if e.Fields["query"] != "q" {
		t.Fatal("the returned entry shares the caller's map")
	}
}

func TestVerifyLineTooLong(t *testing.T) {
	_, err := Verify(bytes.NewReader(bytes.Repeat([]byte("x"), MaxLineSize+10)))
	var ce *ChainError
	if !errors.As(err, &ce) || ce.Line != 1 || !strings.Contains(ce.Problem, "longer than") {
		t.Fatalf("err = %v", err)
	}
}
