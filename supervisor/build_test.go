package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// Dev builds leave out DWARF unless told otherwise.
func TestBuildEnv_goFlags(t *testing.T) {
	for _, tc := range []struct {
		base, block []string
		want        string
	}{
		{nil, nil, "GOFLAGS=-ldflags=-w"},
		{[]string{"GOFLAGS=-mod=mod"}, nil, "GOFLAGS=-mod=mod -ldflags=-w"},
		{[]string{"GOFLAGS=-ldflags=-s"}, nil, "GOFLAGS=-ldflags=-s"},
		{[]string{"GOFLAGS=-mod=mod"}, []string{"GOFLAGS="}, "GOFLAGS="},
	} {
		env := buildEnv(tc.base, tc.block)
		if last := env[len(env)-1]; !slices.Contains(env, tc.want) {
			t.Errorf("base %q, block %q: want %q, have %q (last %q)", tc.base, tc.block, tc.want, env, last)
		}
	}
}

// Handovers are answered on goroutines of their own: the answer for an
// older build that comes after a newer one's (which removed its binary)
// leaves the newer binary the one to run, as a reload then does.
func TestBuilder_lateAnswerForAnOlderBuild(t *testing.T) {
	dir := t.TempDir()
	b := &builder{}
	for n := int64(1); n <= 3; n++ {
		path := filepath.Join(dir, strconv.FormatInt(n, 10), "app")
		os.MkdirAll(filepath.Dir(path), 0o755)
		os.WriteFile(path, nil, 0o755)
		b.outputs = append(b.outputs, output{n: n, path: path})
	}
	newest, older := b.outputs[2].path, b.outputs[1].path
	b.served(newest)
	b.served(older)
	if b.good != newest {
		t.Fatalf("want %s to run, have %s", newest, b.good)
	}
	if _, err := os.Stat(newest); err != nil {
		t.Fatalf("the serving binary was removed: %v", err)
	}
	if len(b.outputs) != 1 || b.outputs[0].path != newest {
		t.Fatalf("want only the serving binary kept, have %+v", b.outputs)
	}
}
