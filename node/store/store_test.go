package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// Once locked, no connection — an existing one or one opened later, as the analysts' SQL
// service opens them — can change a setting, for the database or for itself, and new
// connections still open.
func TestLockConfigurationFreezesEverySetting(t *testing.T) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(t.TempDir(), "store.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.DB().ExecContext(ctx, "SET memory_limit = '300MB'"); err != nil {
		t.Fatal(err)
	}
	before, _ := st.DB().Conn(ctx) // opened before the lock
	defer before.Close()
	if err := st.LockConfiguration(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.LockConfiguration(ctx); err != nil {
		t.Fatalf("a second lock: %v", err)
	}
	st.DB().SetMaxIdleConns(0) // every statement below on a fresh connection
	for _, q := range []string{"SET GLOBAL memory_limit = '100GB'", "SET memory_limit = '100GB'", "SET GLOBAL enable_profiling = 'json'",
		"SET enable_profiling = 'query_tree'", "SET GLOBAL enable_external_access = true", "SET threads = 1", "RESET memory_limit"} {
		if _, err := st.DB().ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "locked") {
			t.Errorf("new connection: %s: %v", q, err)
		}
		if _, err := before.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "locked") {
			t.Errorf("earlier connection: %s: %v", q, err)
		}
	}
	var limit string
	if err := st.DB().QueryRowContext(ctx, "SELECT current_setting('memory_limit')").Scan(&limit); err != nil || !strings.HasPrefix(limit, "286") {
		t.Fatalf("memory limit now %q (%v), want the 300 MB set before the lock", limit, err)
	}
}
