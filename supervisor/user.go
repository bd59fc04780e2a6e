package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/baton-run/baton/internal/execshim"
	"github.com/baton-run/baton/supervisor/config"
)

// credential returns the credential to drop privileges to before exec: the
// user, the group (default: the user's primary group) and the user's
// supplementary groups. It returns nil when the program sets no user.
func credential(p *config.Program) (*syscall.Credential, error) {
	if p.User == "" {
		return nil, nil
	}
	u, err := config.LookupUser(p.User)
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if p.Group != "" {
		g, err := config.LookupGroup(p.Group)
		if err != nil {
			return nil, err
		}
		gid, _ = strconv.ParseUint(g.Gid, 10, 32)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	ids, _ := u.GroupIds()
	for _, id := range ids {
		if n, err := strconv.ParseUint(id, 10, 32); err == nil && uint32(n) != cred.Gid {
			cred.Groups = append(cred.Groups, uint32(n))
		}
	}
	if cred.Groups == nil {
		cred.Groups = []uint32{} // drop baton's supplementary groups
	}
	return cred, nil
}

// CheckUser reports whether program p's user can be started: nil when p
// sets no user, or when that user may execute the exec shim that sets
// LISTEN_PID (/bin/sh, or baton's own binary when the program's
// environment has names a shell would drop; none for a binary that links
// the child package), enter the program's directory and execute its
// command. baton check and every start with a user ask it, so that the
// error says what to fix instead of "permission denied".
func CheckUser(p *config.Program) error {
	cred, err := credential(p)
	if err != nil || cred == nil {
		return err
	}
	env := p.Env
	if !p.CleanEnv {
		env = append(os.Environ(), env...)
	}
	path, pathErr := resolveCommand(p)
	direct := false
	if pathErr == nil {
		_, err := binaryHash(path) // fills the cache startsDirectly reads
		direct = err == nil && startsDirectly(path)
	}
	if !direct && !execshim.UsesShell(env) {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		if err := accessibleBy(exe, false, cred); err != nil {
			return fmt.Errorf("user %q cannot execute baton's own binary, through which baton starts this program (its environment has names a shell would drop, or there is no %s): %w; install baton where that user can run it, such as /usr/local/bin/baton with mode 0755", p.User, execshim.Shell, err)
		}
	}
	if err := accessibleBy(p.Dir, true, cred); err != nil {
		return fmt.Errorf("user %q cannot enter the program's directory: %w", p.User, err)
	}
	if pathErr == nil {
		if err := accessibleBy(path, false, cred); err != nil {
			return fmt.Errorf("user %q cannot execute the program's command: %w", p.User, err)
		}
	}
	return nil
}

// accessibleBy checks the permission bits that exec(2) and chdir(2)
// check for a process with cred: search on every directory of path, and
// execute on the file itself (search, for a directory). Root may execute
// any file that has an execute bit.
func accessibleBy(path string, dir bool, cred *syscall.Credential) error {
	allowed := func(st *syscall.Stat_t, bit uint32) bool {
		mode := st.Mode
		switch {
		case cred.Uid == 0:
			return mode&0o111 != 0 || mode&syscall.S_IFMT == syscall.S_IFDIR
		case st.Uid == cred.Uid:
			return mode&(bit<<6) != 0
		case st.Gid == cred.Gid || slices.Contains(cred.Groups, st.Gid):
			return mode&(bit<<3) != 0
		}
		return mode&bit != 0
	}
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			return err
		}
		if !allowed(&st, 1) {
			return fmt.Errorf("%s is not searchable by uid %d (mode %04o)", dir, cred.Uid, st.Mode&0o7777)
		}
		if dir == "/" {
			break
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return err
	}
	if !allowed(&st, 1) {
		what := "executable"
		if dir {
			what = "searchable"
		}
		return fmt.Errorf("%s is not %s by uid %d (mode %04o)", path, what, cred.Uid, st.Mode&0o7777)
	}
	return nil
}
