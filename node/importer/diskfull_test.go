package importer

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/schemas/synth"
)

// TestAnImportOnAFullDiskChangesNothing: the store lives on a small tmpfs (as root, which CI
// is), the disk is filled, and a large import fails with an error; the store reopens with
// exactly what it held before; once space is back, the same import succeeds.
func TestAnImportOnAFullDiskChangesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("SAMSYN_REQUIRE_ROOT") != "" {
			t.Fatal("the disk-full test needs root to mount a tmpfs")
		}
		t.Skip("the disk-full test needs root to mount a tmpfs (CI runs it as root, with SAMSYN_REQUIRE_ROOT)")
	}
	ctx := context.Background()
	src := t.TempDir()
	if _, err := synth.Write(ctx, src, synth.Options{Participants: 1900, Seed: 3, Format: "csv", Associations: []string{"hbs"}}); err != nil {
		t.Fatal(err)
	}
	big := t.TempDir()
	if _, err := synth.Write(ctx, big, synth.Options{Participants: 160000, Seed: 4, Format: "csv", Associations: []string{"hbs"}}); err != nil {
		t.Fatal(err)
	}
	disk := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", disk).CombinedOutput(); err != nil {
		if os.Getenv("SAMSYN_REQUIRE_ROOT") == "" && (strings.Contains(string(out), "ermission denied") || strings.Contains(string(out), "not permitted")) {
			// Root without CAP_SYS_ADMIN (an unprivileged container): say so loudly.
			t.Skipf("cannot mount a tmpfs here (%s): the disk-full test did not run", strings.TrimSpace(string(out)))
		}
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", disk).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, out)
		}
	})
	path := filepath.Join(disk, "store.duckdb")
	st, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	im := newImporter(st)
	mustImport(t, im, "participant", filepath.Join(src, "hbs", "participant.csv"))
	before := state(t, st)

	// Leave a little room: enough to open, not enough for the large import.
	filler := filepath.Join(disk, "filler")
	f, _ := os.Create(filler)
	chunk := bytes.Repeat([]byte{0}, 256<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	os.Truncate(filler, fileSize(filler)-(1<<20))

	if _, err := importFiles(t, im, "participant", filepath.Join(big, "hbs", "participant.csv")); err == nil {
		t.Fatal("an import that cannot fit on the disk succeeded")
	}
	if after := state(t, st); after != before {
		t.Fatal("a failed import changed the open store")
	}
	st.Close()
	st, err = store.Open(ctx, path)
	if err != nil {
		t.Fatalf("the store does not reopen after a failed import on a full disk: %v", err)
	}
	if after := state(t, st); after != before {
		t.Fatal("the reopened store differs from before the failed import")
	}
	os.Remove(filler)
	im = newImporter(st)
	mustImport(t, im, "participant", filepath.Join(big, "hbs", "participant.csv"))
	st.Close()
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}
