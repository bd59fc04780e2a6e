// Package harness holds what the benchmark (bench/) and the fleet
// (fleet/) harnesses both need: the module they run from, the
// environment of the processes they start, the machine's load.
package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/baton-run/baton/internal/protocol"
)

// ModuleRoot finds the directory of the main module: a harness runs from
// the repository root with go run, and from its own directory with go
// test. name is the harness's directory, for the error.
func ModuleRoot(ctx context.Context, name string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the baton module: run the harness from the repository (go run ./%s)", name)
	}
	return filepath.Dir(mod), nil
}

// ChildEnv is the harness's environment with extra, without the
// variables of the protocols baton speaks (LISTEN_*, NOTIFY_SOCKET,
// BATON_*), in case the harness itself runs under a supervisor: the
// servers it starts must not take sockets or notifications meant for it.
func ChildEnv(extra ...string) []string {
	return append(strip(os.Environ()), extra...)
}

func strip(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || strings.HasPrefix(k, "BATON_") || k == protocol.EnvNotifySocket {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// LoadAvg returns the three load averages of /proc/loadavg, or "" when
// they cannot be read.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
