package handoff

import (
	"net"
	"sort"
)

// When baton replaces itself in place (baton upgrade), the router's
// peers move to the new image: Pause parks every reader between two
// messages, so that no connection is in baton's hands, and the new image
// adopts each peer's socket with its state. Messages not read yet wait in
// the socket, connections included (a descriptor in flight belongs to the
// socket, not to a process).

// PeerState is what the new image of baton needs to go on with a peer.
type PeerState struct {
	Gen   int      `json:"gen"`
	Takes []string `json:"takes,omitempty"` // listeners it said HELLO for and did not DRAIN
	// What became of the connections it sent, for the log line at its end.
	Moved    int `json:"moved,omitempty"`
	Returned int `json:"returned,omitempty"`
	Closed   int `json:"closed,omitempty"`
}

// Pause parks the reader of every peer between two messages and returns
// once each one parked. Peers that Release bounded (their generation was
// reaped) are waited for instead: they end within their bound, having
// passed on what their generation sent. resume lets the parked readers go
// on, when the upgrade did not happen.
func (r *Router) Pause() (resume func()) {
	r.mu.Lock()
	peers := make([]*Peer, 0, len(r.peers))
	for p := range r.peers {
		peers = append(peers, p)
	}
	r.mu.Unlock()
	var parked []*Peer
	for _, p := range peers {
		if p.released.Load() {
			<-p.done
			continue
		}
		<-p.pause.Pause()
		parked = append(parked, p)
	}
	return func() {
		for _, p := range parked {
			p.pause.Resume()
		}
	}
}

// State describes the peer, once it is parked.
func (p *Peer) State() PeerState {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PeerState{Gen: p.gen, Moved: p.moved, Returned: p.returned, Closed: p.closed}
	for l := range p.takes {
		st.Takes = append(st.Takes, l)
	}
	sort.Strings(st.Takes)
	return st
}

// Conn is baton's end of the peer's socket, whose descriptor an upgrade
// passes to the new image.
func (p *Peer) Conn() *net.UnixConn { return p.conn }

// Adopt goes on with a peer of the image of baton before this one: c is
// its end of the socket, st what the peer knew. Its reader starts at
// once, and may pass on a connection its generation sent meanwhile:
// adopt the serving generation's peer first, and SetCurrent it.
func (r *Router) Adopt(c *net.UnixConn, st PeerState) *Peer {
	p := &Peer{r: r, gen: st.Gen, conn: c, done: make(chan struct{}), takes: map[string]bool{},
		moved: st.Moved, returned: st.Returned, closed: st.Closed}
	for _, l := range st.Takes {
		p.takes[l] = true
	}
	return r.run(p)
}
