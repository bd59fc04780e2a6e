package supervisor

import (
	"os"
	"strconv"

	"github.com/baton-run/baton/internal/handoff"
)

// Idle connections move between generations through baton: each program
// has a handoff.Router, each generation a socket pair whose other end it
// inherits (BATON_HANDOFF_FD, after its listeners). The program's
// goroutine, which owns the generations, tells the router which one
// serves (setCurrent) before it signals the old one to stop; the router
// passes what a draining generation sends to that one. DESIGN.md, "Idle
// connections move", has the protocol and who owns a connection when.

// setCurrent makes g the serving generation (nil: none), for the program
// and for its router.
func (p *program) setCurrent(g *generation) {
	p.current = g
	var peer *handoff.Peer
	if g != nil {
		peer = g.handoff
	}
	p.handoff.SetCurrent(peer)
}

// attachHandoff gives the generation about to start its handoff socket,
// unless the program turned it off (stop { move_idle = false }): baton's
// end in g, the generation's end, which it inherits as descriptor fd
// (right after its listeners, outside LISTEN_FDS), and the variable that
// names it. The caller closes the generation's end once the generation
// started (it has its copy) or failed to; baton's reader then ends when
// the generation's processes are gone.
func attachHandoff(sp spawnSpec, g *generation, fd int) ([]string, *os.File, error) {
	if sp.handoff == nil || !sp.cfg.Stop.MoveIdle {
		return nil, nil, nil
	}
	peer, f, err := sp.handoff.Attach(sp.n)
	if err != nil {
		return nil, nil, err
	}
	g.handoff = peer
	return []string{handoff.EnvFD + "=" + strconv.Itoa(fd)}, f, nil
}

// withHandoff is the descriptors a generation inherits: its listeners,
// then its handoff socket when it has one.
func withHandoff(listeners []*os.File, f *os.File) []*os.File {
	if f == nil {
		return listeners
	}
	return append(listeners[:len(listeners):len(listeners)], f)
}
