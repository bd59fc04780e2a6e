package supervisor

import (
	"slices"
	"strings"
	"testing"

	"github.com/baton-run/baton/supervisor/config"
)

// parse parses a config made of program blocks, each "name:command
// args…", for the plan tests.
func parsePrograms(t *testing.T, progs ...string) *config.File {
	t.Helper()
	var b strings.Builder
	for i, p := range progs {
		name, cmd, _ := strings.Cut(p, ":")
		args := strings.Fields(cmd)
		b.WriteString(`program "` + name + `" {` + "\n  command = [\"" + strings.Join(args, `", "`) + "\"]\n")
		b.WriteString(`  listener "http" { address = "127.0.0.1:` + string(rune('1'+i)) + `000" }` + "\n")
		if name == "w" {
			b.WriteString("  watch { paths = [\"templates\"] }\n")
		}
		b.WriteString("}\n")
	}
	f, diags := config.Parse([]byte(b.String()), "config.hcl", "/srv")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return f
}

func TestPlanReload(t *testing.T) {
	old := parsePrograms(t, "a:./a", "b:./b", "c:./c")
	for _, tc := range []struct {
		name                               string
		new                                []string
		only                               []string
		added, removed, changed, unchanged []string
		files                              []string // the programs of the planned file, and their commands
	}{
		{"nothing changed", []string{"a:./a", "b:./b", "c:./c"}, nil,
			nil, nil, nil, []string{"a", "b", "c"}, []string{"a ./a", "b ./b", "c ./c"}},
		{"added, removed, changed", []string{"a:./a -v", "b:./b", "d:./d"}, nil,
			[]string{"d"}, []string{"c"}, []string{"a"}, []string{"b"}, []string{"a ./a -v", "b ./b", "d ./d"}},
		{"a new path is a change", []string{"a:./a2", "b:./b", "c:./c"}, nil,
			nil, nil, []string{"a"}, []string{"b", "c"}, []string{"a ./a2", "b ./b", "c ./c"}},
		{"only one: the others keep their blocks", []string{"a:./a -v", "b:./b -v", "d:./d"}, []string{"b"},
			nil, nil, []string{"b"}, nil, []string{"a ./a", "b ./b -v", "c ./c"}},
		{"only a new one", []string{"a:./a -v", "d:./d"}, []string{"d"},
			[]string{"d"}, nil, nil, nil, []string{"a ./a", "d ./d", "b ./b", "c ./c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := planReload(old, parsePrograms(t, tc.new...), tc.only)
			for _, c := range []struct {
				what       string
				have, want []string
			}{{"added", pl.added, tc.added}, {"removed", pl.removed, tc.removed}, {"changed", pl.changed, tc.changed}, {"unchanged", pl.unchanged, tc.unchanged}} {
				if !slices.Equal(c.have, c.want) {
					t.Errorf("%s: want %v, have %v", c.what, c.want, c.have)
				}
			}
			var files []string
			for _, p := range pl.file.Programs {
				files = append(files, p.Name+" "+strings.ReplaceAll(strings.Join(p.Command, " "), "/srv/", "./"))
			}
			if !slices.Equal(files, tc.files) {
				t.Errorf("planned file: want %v, have %v", tc.files, files)
			}
		})
	}
}

// The fingerprint covers every field that reaches the process, without a
// list to keep up to date: the watch and build blocks alone do not count.
func TestPlanReload_watchBlockIsNoChange(t *testing.T) {
	old := parsePrograms(t, "v:./v")
	new := parsePrograms(t, "w:./v")
	new.Programs[0].Name = "v"
	if pl := planReload(old, new, nil); !slices.Equal(pl.unchanged, []string{"v"}) {
		t.Fatalf("a watch block alone changed the program: %+v", pl)
	}
	new.Programs[0].Stop.Timeout++
	if pl := planReload(old, new, nil); !slices.Equal(pl.changed, []string{"v"}) {
		t.Fatalf("a stop timeout did not change the program: %+v", pl)
	}
}
