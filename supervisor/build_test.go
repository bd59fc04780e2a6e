package supervisor

import (
	"slices"
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
