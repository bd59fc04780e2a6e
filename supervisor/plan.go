package supervisor

import (
	"slices"

	"github.com/baton-run/baton/supervisor/config"
)

// plan is what a reload changes, program by program: a pure function of
// the config that runs and the one just read, tested without processes.
type plan struct {
	added     []string // in the new config only: started
	removed   []string // in the old one only: stopped
	changed   []string // in both, with another fingerprint: handed over
	unchanged []string // in both, the same: left alone unless forced
	// file is the config that describes what runs once the plan is
	// applied: the new one, except that a reload restricted to some
	// programs keeps the old blocks of the others.
	file *config.File
}

// planReload compares old and new. With only, the reload concerns those
// programs (all in new) and no other: nothing is removed, and the other
// programs keep their old blocks.
func planReload(old, new *config.File, only []string) plan {
	concerned := func(name string) bool { return len(only) == 0 || slices.Contains(only, name) }
	pl := plan{file: new}
	if len(only) > 0 {
		f := *new
		f.Programs = nil
		for _, n := range new.Programs {
			if concerned(n.Name) {
				f.Programs = append(f.Programs, n)
			} else if o := old.Program(n.Name); o != nil {
				f.Programs = append(f.Programs, o)
			}
		}
		for _, o := range old.Programs {
			if new.Program(o.Name) == nil {
				f.Programs = append(f.Programs, o)
			}
		}
		pl.file = &f
	}
	for _, n := range new.Programs {
		if !concerned(n.Name) {
			continue
		}
		switch o := old.Program(n.Name); {
		case o == nil:
			pl.added = append(pl.added, n.Name)
		case o.Fingerprint() != n.Fingerprint():
			pl.changed = append(pl.changed, n.Name)
		default:
			pl.unchanged = append(pl.unchanged, n.Name)
		}
	}
	if len(only) == 0 {
		for _, o := range old.Programs {
			if new.Program(o.Name) == nil {
				pl.removed = append(pl.removed, o.Name)
			}
		}
	}
	return pl
}
