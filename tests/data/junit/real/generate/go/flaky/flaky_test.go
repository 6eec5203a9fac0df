package flaky

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFlaky fails on its first run and passes when gotestsum --rerun-fails runs it again.
func TestFlaky(t *testing.T) {
	marker := filepath.Join(os.Getenv("FLAKY_DIR"), "tried")
	if _, err := os.Stat(marker); err != nil {
		_ = os.WriteFile(marker, nil, 0o600)
		t.Fatal("first try fails")
	}
}

func TestAlwaysFails(t *testing.T) {
	t.Fatal("fails every time")
}

func TestPasses(t *testing.T) {}
