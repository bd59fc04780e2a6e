package supervisor

import (
	"strings"
	"time"

	"github.com/baton-run/baton/internal/watch"
)

// watchTargets lists what to watch for the config that runs: the config
// file, each program's binary (baton run) or sources (baton dev), and the
// paths its watch block adds. It runs in the loop and only lists: the
// watcher stats, hashes and walks on its own goroutines. The targets'
// Fire functions post to the loop, or to the config reader.
func (s *Supervisor) watchTargets() []*watch.Target {
	f := s.file
	if !f.Watch.Enabled {
		return nil
	}
	var ts []*watch.Target
	if f.Watch.Config {
		ts = append(ts, &watch.Target{Path: s.path, Content: true, Debounce: f.Watch.Debounce, Fire: func([]string) {
			s.reloadLater(ReloadRequest{Reason: "config file changed"})
		}})
	}
	for _, pc := range f.Programs {
		// An env file is part of the config: a change is a reload, which
		// hands over the programs whose environment changed.
		for _, ef := range pc.EnvFiles {
			ts = append(ts, &watch.Target{Path: ef, Content: true, Debounce: f.Watch.Debounce, Fire: func([]string) {
				s.reloadLater(ReloadRequest{Reason: "env file changed"})
			}})
		}
		if !pc.Watch.Enabled {
			continue
		}
		name := pc.Name
		if b := s.builders[name]; b != nil {
			for _, w := range pc.Build.Watch {
				ts = append(ts, &watch.Target{Path: w, Tree: true, Include: pc.Build.Include, Exclude: pc.Build.Exclude,
					Debounce: pc.Build.Debounce, Fire: b.trigger})
			}
		} else if strings.Contains(pc.Command[0], "/") {
			ts = append(ts, &watch.Target{Path: pc.Command[0], Content: true, Debounce: f.Watch.Debounce, Fire: func([]string) {
				s.post(msgWatch{program: name, reason: "binary changed", trigger: time.Now()})
			}})
		}
		for _, path := range pc.Watch.Paths {
			ts = append(ts, &watch.Target{Path: path, Auto: true, Debounce: f.Watch.Debounce, Fire: func(changed []string) {
				// The binary and config may be the same as what serves:
				// the change is in these files, so it is always handed over.
				s.post(msgWatch{program: name, reason: s.console.describe(changed), force: true, trigger: time.Now()})
			}})
		}
	}
	return ts
}

// watchHandover hands a program over because a watched file changed.
func (s *Supervisor) watchHandover(m msgWatch) {
	p := s.programs[m.program]
	if p == nil || s.stopping || s.holdForUpgrade(m) {
		return
	}
	s.log.Info("change noticed: handing over", "program", m.program, "reason", m.reason)
	req := &request{reason: m.reason, force: m.force, trigger: m.trigger}
	// The config as declared, with its command: the program's own may run
	// a binary of a rollback, or of a build.
	cfg := s.file.Program(m.program)
	if b := s.builders[m.program]; b != nil {
		cfg = b.runConfig()
	}
	if cfg != nil {
		if l, err := s.pool.acquire(cfg.Name, cfg.Listeners); err == nil {
			req.cfg, req.lease = cfg, l
		}
	}
	p.post(evRequest{req})
}
