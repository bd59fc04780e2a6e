package supervisor

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baton-run/baton/supervisor/config"
	"github.com/hashicorp/go-hclog"
)

// keptBinaries is how many binaries baton keeps per program for
// rollback: the one that serves and the one before it.
const keptBinaries = 2

// keeper keeps the binary of each generation that served, under
// .baton/bin/PROGRAM next to the config file, so that a rollback can hand
// over to the previous version even after the file on disk was replaced:
// a hard link when the file the process runs is still on disk, a copy
// (from /proc/PID/exe, which reaches a deleted file too) otherwise.
type keeper struct {
	dir string
	log hclog.Logger
	bg  func(func()) // runs the copy on a goroutine Run waits for
}

func (k *keeper) keep(program string, g *generation, done func(keptBinary)) {
	pid, n, base := g.pid, g.n, filepath.Base(g.cfg.Command[0])
	k.bg(func() {
		dst := filepath.Join(k.dir, program, fmt.Sprintf("%d-%s", n, base))
		if err := keepExe(pid, dst); err != nil {
			k.log.Warn("cannot keep the binary for rollback", "program", program, "gen", n, "error", err)
			return
		}
		k.log.Debug("kept the binary for rollback", "program", program, "gen", n, "path", dst)
		done(keptBinary{gen: n, path: dst})
	})
}

// keepExe links or copies the executable of process pid to dst.
func keepExe(pid int, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	exe := "/proc/" + strconv.Itoa(pid) + "/exe"
	var want syscall.Stat_t
	if err := syscall.Stat(exe, &want); err != nil {
		return err
	}
	unlinkKept(dst)
	if target, err := os.Readlink(exe); err == nil && !strings.HasSuffix(target, " (deleted)") {
		var have syscall.Stat_t
		if syscall.Stat(target, &have) == nil && have.Dev == want.Dev && have.Ino == want.Ino && os.Link(target, dst) == nil {
			linksChanged(uint64(have.Dev), have.Ino)
			return nil
		}
	}
	in, err := os.Open(exe)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// unlinkKept removes a kept binary, which may be a hard link to the one
// that serves.
func unlinkKept(path string) {
	var st syscall.Stat_t
	if syscall.Lstat(path, &st) != nil {
		return
	}
	if os.Remove(path) == nil && st.Nlink > 1 {
		linksChanged(uint64(st.Dev), st.Ino)
	}
}

// onKept records a binary kept for rollback; the oldest beyond
// keptBinaries goes.
func (p *program) onKept(k keptBinary) {
	p.kept = append(p.kept, k)
	for len(p.kept) > keptBinaries {
		unlinkKept(p.kept[0].path)
		p.kept = p.kept[1:]
	}
}

// onRollback hands the program over to the binary of the newest kept
// generation that is not the serving one, with the program's config.
func (p *program) onRollback(req *request) {
	var prev *keptBinary
	for i := len(p.kept) - 1; i >= 0; i-- {
		if p.current == nil || p.kept[i].gen != p.current.n {
			prev = &p.kept[i]
			break
		}
	}
	if prev == nil {
		p.end(req, p.serving(fmt.Errorf("supervisor: no previous binary kept for %s: a rollback needs a generation that served before this one", p.name)))
		return
	}
	req.cfg, req.lease, req.force = p.cfg.WithBinary(prev.path), p.lease.clone(), true
	req.reason = fmt.Sprintf("rollback to the binary of gen %d", prev.gen)
	p.onRequest(req)
}

// statsEvery is the interval at which a generation started with cfg is
// asked for its request counters: half the bake's, so that each
// evaluation sees fresh ones; 0 for a program that does not bake.
func (p *program) statsEvery(cfg *config.Program) time.Duration {
	if p.dev || cfg.Bake == nil {
		return 0
	}
	return max(cfg.Bake.Interval/2, 10*time.Millisecond)
}
