package supervisor

import (
	"strconv"
	"syscall"

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
