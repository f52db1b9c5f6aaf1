package state

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/samsyn/samsyn/coordinator/study"
)

// smallDisk mounts a 4 MiB tmpfs for the test (as root, which CI is) and unmounts it after.
func smallDisk(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("SAMSYN_REQUIRE_ROOT") != "" {
			t.Fatal("the disk-full test needs root to mount a tmpfs")
		}
		t.Skip("the disk-full test needs root to mount a tmpfs (CI runs it as root, with SAMSYN_REQUIRE_ROOT)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("SAMSYN_REQUIRE_ROOT") == "" && (strings.Contains(string(out), "ermission denied") || strings.Contains(string(out), "not permitted")) {
			// Root without CAP_SYS_ADMIN (an unprivileged container): say so loudly.
			t.Skipf("cannot mount a tmpfs here (%s): the disk-full test did not run", strings.TrimSpace(string(out)))
		}
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// fill takes every free byte of the disk and returns a function that gives them back.
func fill(t *testing.T, dir string) func() {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{1}, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	for {
		if _, err := f.Write(chunk[:512]); err != nil {
			break
		}
	}
	f.Close()
	return func() { os.Remove(p) }
}

func newStudy() *study.Study {
	return &study.Study{ID: study.NewID(), Title: "t", Purpose: "p", Evaluator: "eva", State: study.Submitted, CreatedAt: time.Now(),
		Queries: []study.Query{{ID: "q", Hash: "h", Params: map[string]string{"from": "2021-01-01"}}}, Associations: []string{"hbs"}}
}

// TestAFullDiskIsAClearErrorThatChangesNothing: with the disk full, writes fail as
// ErrUnavailable and Ready says so; nothing half-written remains; once space is back, the
// same store writes again, and a reopened store passes its integrity check with every
// earlier study intact.
func TestAFullDiskIsAClearErrorThatChangesNothing(t *testing.T) {
	ctx := context.Background()
	dir := smallDisk(t)
	path := filepath.Join(dir, "state.sqlite")
	s := open(t, path)
	defer s.Close()
	before := newStudy()
	if err := s.CreateStudy(ctx, before, "eva"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("ready with space: %v", err)
	}
	free := fill(t, dir)
	failed := 0
	var big []*study.Study
	for i := 0; i < 200; i++ { // until a write fails: the WAL may hold a little first
		st := newStudy()
		st.Purpose = string(bytes.Repeat([]byte("x"), 8<<10))
		err := s.CreateStudy(ctx, st, "eva")
		if err != nil {
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("a full disk gave %v, want ErrUnavailable", err)
			}
			failed++
			if _, gerr := s.Study(ctx, st.ID); !errors.Is(gerr, ErrNotFound) {
				t.Fatalf("a failed write left the study behind: %v", gerr)
			}
			break
		}
		big = append(big, st)
	}
	if failed == 0 {
		t.Fatal("no write failed on a full disk: the test proves nothing")
	}
	if err := s.Ready(ctx); err == nil {
		t.Fatal("Ready said yes with the disk full")
	}
	free()
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("still not ready after space came back: %v", err)
	}
	after := newStudy()
	if err := s.CreateStudy(ctx, after, "eva"); err != nil {
		t.Fatalf("a write after space came back: %v", err)
	}
	s.Close()
	s2 := open(t, path)
	defer s2.Close()
	for _, st := range append([]*study.Study{before, after}, big...) {
		if _, err := s2.Study(ctx, st.ID); err != nil {
			t.Fatalf("study %s after reopening: %v", st.ID, err)
		}
	}
}
