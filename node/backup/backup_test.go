package backup

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samsyn/samsyn/node/nodetest"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries/audit"
)

func count(t *testing.T, path string) int {
	t.Helper()
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var n int
	if err := st.DB().QueryRow(`SELECT count(*) FROM participant`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func appendEntries(t *testing.T, path string, n int, action string) {
	t.Helper()
	w, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < n; i++ {
		if _, err := w.Append(context.Background(), audit.Entry{Actor: "test", Action: action, Fields: map[string]string{"i": "x"}}); err != nil {
			t.Fatal(err)
		}
	}
}

func actions(t *testing.T, path string) []string {
	var out []string
	if err := audit.ScanFile(path, func(e audit.Entry) { out = append(out, e.Action) }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestHoldStore is a helper, run as a separate process by the test below: it holds a store
// open, as a serving node does, until its standard input closes.
func TestHoldStore(t *testing.T) {
	path := os.Getenv("SAMSYN_HOLD_STORE")
	if path == "" {
		return
	}
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	os.Stdout.WriteString("held\n")
	io.Copy(io.Discard, os.Stdin)
}

func TestBackupAndRestoreKeepTheStoreAndTheHistory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := Paths{Association: "hbs", Store: filepath.Join(dir, "store.duckdb"), AuditLog: filepath.Join(dir, "audit.log")}
	st, err := store.Open(ctx, p.Store)
	if err != nil {
		t.Fatal(err)
	}
	nodetest.Seed(t, st.DB(), "hbs", 120)
	appendEntries(t, p.AuditLog, 3, "release")
	st.Close()

	// A serving node (another process) holds the store: no backup, and the reason.
	holder := exec.Command(os.Args[0], "-test.run", "^TestHoldStore$")
	holder.Env = append(os.Environ(), "SAMSYN_HOLD_STORE="+p.Store)
	stdin, _ := holder.StdinPipe()
	stdout, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 5)
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "held\n" {
		t.Fatalf("the holding process: %q %v", line, err)
	}
	_, err = Backup(ctx, p, filepath.Join(dir, "b0"))
	stdin.Close()
	holder.Wait()
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "stop the node") {
		t.Fatalf("a backup of a store in use: %v", err)
	}
	before := count(t, p.Store)

	bdir := filepath.Join(dir, "backup")
	m, err := Backup(ctx, p, bdir)
	if err != nil {
		t.Fatal(err)
	}
	if m.AuditSeq != 3 || len(m.Files) != 2 {
		t.Fatalf("manifest %+v", m)
	}
	for _, f := range []string{"store.duckdb", "audit.log", ManifestFile} {
		if fi, err := os.Stat(filepath.Join(bdir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, fi.Mode())
		}
	}
	if _, err := Backup(ctx, p, bdir); err == nil {
		t.Fatal("a backup over an earlier one")
	}

	// After the backup: participants lost, more history.
	st, _ = store.Open(ctx, p.Store)
	st.DB().Exec(`DELETE FROM episode`)
	st.DB().Exec(`DELETE FROM survey`)
	st.DB().Exec(`DELETE FROM followup`)
	if _, err := st.DB().Exec(`DELETE FROM participant`); err != nil {
		t.Fatal(err)
	}
	st.Close()
	appendEntries(t, p.AuditLog, 2, "contribute")
	if count(t, p.Store) != 0 {
		t.Fatal("the store still has participants")
	}

	if _, err := Restore(ctx, Paths{Association: "varna", Store: p.Store, AuditLog: p.AuditLog}, bdir); err == nil {
		t.Fatal("a backup of hbs restored on varna's node")
	}
	if _, err := Restore(ctx, p, bdir); err != nil {
		t.Fatal(err)
	}
	if got := count(t, p.Store); got != before {
		t.Fatalf("restored %d participants, the backup had %d", got, before)
	}
	// The log still holds what happened after the backup, then the restore itself.
	got := strings.Join(actions(t, p.AuditLog), ",")
	if got != "release,release,release,contribute,contribute,restore" {
		t.Fatalf("audit log after the restore: %s", got)
	}
	if kept, _ := filepath.Glob(p.Store + ".before-restore-*"); len(kept) != 1 {
		t.Fatalf("the replaced store was not kept: %v", kept)
	}

	// A log that does not extend the backup's is a conflict; a changed backup is refused.
	os.Remove(p.AuditLog)
	appendEntries(t, p.AuditLog, 5, "other")
	if _, err := Restore(ctx, p, bdir); !errors.Is(err, ErrConflict) {
		t.Fatalf("a diverging audit log: %v", err)
	}
	f, _ := os.OpenFile(filepath.Join(bdir, "store.duckdb"), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("x"))
	f.Close()
	if _, err := Read(bdir); err == nil || !strings.Contains(err.Error(), "has changed since the backup") {
		t.Fatalf("a changed backup: %v", err)
	}
}
