// Package backup copies a stopped node's store and audit log into a folder with a manifest,
// and restores them, so an association can recover its node without losing its history.
//
// A backup is consistent because it is taken from a stopped node: the store is opened
// exclusively and checkpointed, then copied with its audit log, each file's SHA-256 and the
// audit log's head in the manifest. (A serving node holds the store, and refuses file access
// to its own database, so a backup of a serving node is refused with the reason.)
//
// A restore puts the backup's store in place and keeps the current one beside it. The audit
// log is history: if the current log still holds the backup's head (it extends the backup),
// it is kept as it is, so the node remembers every ticket, cohort and model step it answered
// after the backup; only a missing log is restored from the backup. A current log that does
// not hold the backup's head is a conflict, refused. The restore is itself audited.
package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries/audit"
	"github.com/samsyn/samsyn/schemas"
)

// ManifestFile is the manifest's name in a backup folder.
const ManifestFile = "manifest.json"

// Manifest describes a backup.
type Manifest struct {
	Association   string            `json:"association"`
	CreatedAt     time.Time         `json:"created_at"`
	SchemaVersion int               `json:"schema_version"`
	Snapshot      string            `json:"snapshot"`
	AuditSeq      int64             `json:"audit_seq"`
	AuditHash     string            `json:"audit_hash"`
	Files         map[string]string `json:"files"` // name -> hex SHA-256
}

// Paths are a node's files.
type Paths struct {
	Association string
	Store       string
	AuditLog    string
}

const (
	storeName = "store.duckdb"
	auditName = "audit.log"
)

// ErrConflict refuses a restore whose audit log would lose history.
var ErrConflict = errors.New("the node's audit log does not extend the backup's")

// Backup writes a backup of p into dir (created; it must not hold files already).
func Backup(ctx context.Context, p Paths, dir string) (*Manifest, error) {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("backup folder %s is not empty: choose a new one", dir)
	}
	st, err := store.Open(ctx, p.Store)
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("%w: stop the node for a consistent backup (systemctl stop samsyn-node), then run this again", err)
		}
		return nil, err
	}
	snap, err := st.Snapshot(ctx)
	if err == nil {
		_, err = st.DB().ExecContext(ctx, "CHECKPOINT")
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("prepare the store: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	m := &Manifest{Association: p.Association, CreatedAt: time.Now().UTC(), SchemaVersion: schemas.Version, Snapshot: snap, Files: map[string]string{}}
	if m.Files[storeName], err = copyFile(p.Store, filepath.Join(dir, storeName)); err != nil {
		return nil, err
	}
	if _, err := os.Stat(p.AuditLog); err == nil {
		if m.Files[auditName], err = copyFile(p.AuditLog, filepath.Join(dir, auditName)); err != nil {
			return nil, err
		}
		if m.AuditSeq, m.AuditHash, err = head(filepath.Join(dir, auditName)); err != nil {
			return nil, fmt.Errorf("the audit log does not verify, nothing backed up: %w", err)
		}
	}
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := writeFileSync(filepath.Join(dir, ManifestFile), append(raw, '\n')); err != nil {
		return nil, err
	}
	return m, nil
}

// Read reads and checks a backup: its manifest, every file's SHA-256, the audit chain.
func Read(dir string) (*Manifest, error) {
	raw, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("read the backup's manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if m.Files[storeName] == "" {
		return nil, fmt.Errorf("%s names no store", filepath.Join(dir, ManifestFile))
	}
	for name, want := range m.Files {
		if name != storeName && name != auditName {
			return nil, fmt.Errorf("the manifest names an unknown file %q", name)
		}
		got, err := fileSHA256(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if got != want {
			return nil, fmt.Errorf("%s has changed since the backup (SHA-256 %s, the manifest says %s)", name, got[:12], want[:min(12, len(want))])
		}
	}
	if m.Files[auditName] != "" {
		seq, hash, err := head(filepath.Join(dir, auditName))
		if err != nil || seq != m.AuditSeq || hash != m.AuditHash {
			return nil, fmt.Errorf("the backup's audit log does not end where the manifest says (%d): %v", m.AuditSeq, err)
		}
	}
	if m.SchemaVersion > schemas.Version {
		return nil, fmt.Errorf("the backup is of schema version %d, this samsyn knows %d: restore it with a newer samsyn", m.SchemaVersion, schemas.Version)
	}
	return &m, nil
}

// Restore puts the backup in dir in place for p. The current store is kept as
// STORE.before-restore-TIME.
func Restore(ctx context.Context, p Paths, dir string) (*Manifest, error) {
	m, err := Read(dir)
	if err != nil {
		return nil, err
	}
	if m.Association != p.Association {
		return nil, fmt.Errorf("the backup is of %s, this node is %s", m.Association, p.Association)
	}
	if _, err := os.Stat(p.Store); err == nil {
		st, err := store.Open(ctx, p.Store)
		if err != nil {
			if errors.Is(err, store.ErrLocked) {
				return nil, fmt.Errorf("%w: stop the node before restoring", err)
			}
		} else {
			st.Close()
		}
	}
	keepLog := false
	if _, err := os.Stat(p.AuditLog); err == nil {
		if m.AuditSeq > 0 {
			if err := audit.CheckAnchor(p.AuditLog, m.AuditSeq, m.AuditHash); err != nil {
				return nil, fmt.Errorf("%w: %v; nothing restored", ErrConflict, err)
			}
		} else if _, err := audit.VerifyFile(p.AuditLog); err != nil {
			return nil, fmt.Errorf("%w: %v; nothing restored", ErrConflict, err)
		}
		keepLog = true
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	if _, err := os.Stat(p.Store); err == nil {
		if err := os.Rename(p.Store, p.Store+".before-restore-"+stamp); err != nil {
			return nil, err
		}
		_ = os.Rename(p.Store+".wal", p.Store+".wal.before-restore-"+stamp)
	}
	if _, err := copyFile(filepath.Join(dir, storeName), p.Store); err != nil {
		return nil, err
	}
	if !keepLog && m.Files[auditName] != "" {
		if _, err := copyFile(filepath.Join(dir, auditName), p.AuditLog); err != nil {
			return nil, err
		}
	}
	st, err := store.Open(ctx, p.Store)
	if err != nil {
		return nil, fmt.Errorf("the restored store does not open: %w", err)
	}
	snap, err := st.Snapshot(ctx)
	st.Close()
	if err != nil || snap != m.Snapshot {
		return nil, fmt.Errorf("the restored store's snapshot is %q, the manifest says %q: %v", snap, m.Snapshot, err)
	}
	w, err := audit.Open(p.AuditLog)
	if err != nil {
		return nil, fmt.Errorf("record the restore in the audit log: %w", err)
	}
	defer w.Close()
	if _, err := w.Append(ctx, audit.Entry{Actor: "operator", Action: "restore", Fields: map[string]string{
		"snapshot": m.Snapshot, "backup_created_at": m.CreatedAt.Format(time.RFC3339), "backup_audit_seq": strconv.FormatInt(m.AuditSeq, 10),
	}}); err != nil {
		return nil, fmt.Errorf("record the restore in the audit log: %w", err)
	}
	return m, nil
}

func head(path string) (int64, string, error) {
	var seq int64
	var hash string
	err := audit.ScanFile(path, func(e audit.Entry) { seq, hash = e.Seq, e.Hash })
	return seq, hash, err
}

// copyFile copies src to dst (0600, synced) and returns the copy's SHA-256.
func copyFile(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("copy %s: %w", filepath.Base(src), err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(tmp)
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
