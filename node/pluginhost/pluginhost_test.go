package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/samsyn/samsyn/analysis"
	"github.com/samsyn/samsyn/analysis/km"
)

func TestAChangedPluginIsRefusedBeforeItRuns(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "analysis")
	marker := filepath.Join(dir, "ran")
	os.WriteFile(bin, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755)
	sum := sha256.Sum256([]byte("#!/bin/sh\necho the approved build\n"))
	pin := Pin{Path: bin, SHA256: hex.EncodeToString(sum[:])}
	if err := pin.Verify(); !errors.Is(err, ErrChecksum) {
		t.Fatalf("Verify: %v", err)
	}
	cfg, err := ClientConfig(pin, plugin.PluginSet{}, hclog.NewNullLogger(), "")
	if err != nil {
		t.Fatal(err)
	}
	client := plugin.NewClient(cfg)
	defer client.Kill()
	if _, err := client.Start(); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("go-plugin started a changed binary: %v", err)
	}
	if _, err := Run(context.Background(), pin, Options{}, &analysis.Request{}, nil); !errors.Is(err, ErrChecksum) {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the changed plugin ran")
	}
	good, _ := os.ReadFile(bin)
	sum = sha256.Sum256(good)
	if err := (Pin{Path: bin, SHA256: hex.EncodeToString(sum[:])}).Verify(); err != nil {
		t.Fatalf("the approved build was refused: %v", err)
	}
	if _, err := ClientConfig(Pin{Path: bin, SHA256: "abc"}, plugin.PluginSet{}, hclog.NewNullLogger(), ""); err == nil {
		t.Fatal("a malformed pin was accepted")
	}
}

var (
	buildOnce sync.Once
	built     map[string]string
	buildErr  error
)

// plugins builds the km plugin and the misbehaving test plugin once per test binary.
func plugins(t *testing.T) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "samsyn-plugins-")
		if err != nil {
			buildErr = err
			return
		}
		built = map[string]string{}
		for name, pkg := range map[string]string{"km": "../../cmd/samsyn-analysis-km", "misbehave": "./testdata/misbehave"} {
			out := filepath.Join(dir, name)
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = errors.New(string(b))
				return
			}
			built[name] = out
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func pinOf(t *testing.T, path string) Pin {
	sum, err := FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return Pin{Path: path, SHA256: sum}
}

func rowsReader(t *testing.T) array.RecordReader {
	sc := arrow.NewSchema([]arrow.Field{
		{Name: analysis.ColRecordKey, Type: arrow.PrimitiveTypes.Int64},
		{Name: analysis.ColParticipant, Type: arrow.PrimitiveTypes.Int64},
		{Name: "method", Type: arrow.BinaryTypes.String},
		{Name: "months", Type: arrow.PrimitiveTypes.Int64},
		{Name: "event", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	for i := 0; i < 3000; i++ {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		b.Field(1).(*array.Int64Builder).Append(int64(i))
		b.Field(2).(*array.StringBuilder).Append([]string{"SE", "IPS", "BOSTON"}[i%3])
		b.Field(3).(*array.Int64Builder).Append(int64(i % 7))
		b.Field(4).(*array.Int64Builder).Append(int64(i % 2))
	}
	rec := b.NewRecord()
	r, err := array.NewRecordReader(sc, []arrow.Record{rec})
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTheKaplanMeierPluginAsARealProcess(t *testing.T) {
	bins := plugins(t)
	req := &analysis.Request{Analysis: "time_to_work", Kind: analysis.KindCells,
		Options: map[string]string{"time": "months", "event": "event"},
		Dimensions: []analysis.Dimension{{Name: "method", Domain: []string{"SE", "IPS", "BOSTON"}},
			{Name: "month", Domain: []string{"0", "1", "2", "3", "4", "5", "6"}},
			{Name: "status", Domain: []string{km.StatusEvent, km.StatusCensored}}}}
	res, err := Run(context.Background(), pinOf(t, bins["km"]), Options{}, req, rowsReader(t))
	if err != nil {
		t.Fatal(err)
	}
	// Row i: method i mod 3, month i mod 7, event i mod 2: by the Chinese remainder theorem
	// each of the 42 combinations holds 3000/42 rows, rounded by position.
	var total int64
	for _, c := range res.Cells {
		total += c.N
		if c.N < 71 || c.N > 72 {
			t.Errorf("cell %v has %d rows", c.Labels, c.N)
		}
	}
	if total != 3000 || len(res.Cells) != 42 {
		t.Fatalf("%d cells counting %d rows", len(res.Cells), total)
	}
}

func TestAMisbehavingPluginIsStopped(t *testing.T) {
	bins := plugins(t)
	pin := pinOf(t, bins["misbehave"])
	req := func(mode string) *analysis.Request {
		return &analysis.Request{Analysis: "x", Kind: analysis.KindCells, Options: map[string]string{"mode": mode},
			Dimensions: []analysis.Dimension{{Name: "d", Domain: []string{"a"}}}}
	}
	start := time.Now()
	_, err := Run(context.Background(), pin, Options{Timeout: 2 * time.Second}, req("sleep"), rowsReader(t))
	if !errors.Is(err, ErrPlugin) || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("a plugin past its deadline: %v", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("the deadline of 2 s took %s", time.Since(start))
	}
	if _, err := Run(context.Background(), pin, Options{MemoryLimit: 1 << 30}, req("alloc"), rowsReader(t)); !errors.Is(err, ErrPlugin) {
		t.Errorf("a plugin past its memory limit: %v", err)
	}
	if _, err := Run(context.Background(), pin, Options{}, req("shape"), rowsReader(t)); !errors.Is(err, analysis.ErrShape) {
		t.Errorf("an answer outside the shape: %v", err)
	}
	t.Setenv("SAMSYN_TEST_SECRET", "must-not-reach-the-plugin")
	_, err = Run(context.Background(), pin, Options{}, req("env"), rowsReader(t))
	// The plugin reports each inherited variable as a cell labelled with it; the shape check
	// refuses those labels, and the error must not carry them either.
	if err != nil && strings.Contains(err.Error(), "must-not-reach") {
		t.Fatalf("the shape error repeats the plugin's labels: %v", err)
	}
	if err != nil {
		t.Errorf("the plugin saw environment variables of the node: %v", err)
	}
}
