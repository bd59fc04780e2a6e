package supervisor

import (
	"fmt"
	"slices"

	"github.com/baton-run/baton/supervisor/control"
)

// phase is where a program is in its life. It is the one place that says
// what a program is doing; the fields beside it hold only the data of the
// phase (the serving generation, the attempt under way, the restart timer).
//
// Generations that are draining are not a phase: a program in any phase
// may have old generations still exiting.
type phase int

const (
	// phaseBuilding: baton dev, no good build yet; nothing runs.
	phaseBuilding phase = iota
	// phaseWaiting: the programs of its after list do not serve (or, for
	// one-shots, did not complete) yet; waitReason says which. The
	// supervisor's loop releases it.
	phaseWaiting
	// phaseStarting: an attempt is under way and no generation serves.
	phaseStarting
	// phaseRunning: current serves; an attempt (a handover) may be under
	// way.
	phaseRunning
	// phaseBackoff: none serves; the restart timer is armed.
	phaseBackoff
	// phaseBaking: current serves, and the generation of a handover that
	// was ready (baking.gen) serves beside it while it is judged; the old
	// one is told to stop only when the new one passed.
	phaseBaking
	// phaseExited: none serves and the restart policy does not restart
	// it; exitReason says why. A request or Start starts it.
	phaseExited
	// phaseStopping: stopped on request (Stop); its generations are
	// exiting. No request starts it.
	phaseStopping
	// phaseStopped: stopped on request, none runs; Start starts it. Its
	// config and sockets are kept, and a reload updates its config.
	phaseStopped
	// phaseShutdown: baton stops, or the program left the config; its
	// generations are exiting, and its goroutine ends when none is left.
	phaseShutdown
)

// transitions lists the phases each phase may move to. A program moves by
// p.enter, which refuses anything else. Every handler of program.go ends
// in one of these moves, or stays.
var transitions = map[phase][]phase{
	phaseBuilding: {phaseStarting, phaseBackoff, phaseExited, phaseStopped, phaseShutdown},
	phaseWaiting:  {phaseStarting, phaseBackoff, phaseExited, phaseStopped, phaseShutdown},
	phaseStarting: {phaseStarting, phaseRunning, phaseBackoff, phaseExited, phaseStopping, phaseStopped, phaseShutdown},
	phaseRunning:  {phaseRunning, phaseStarting, phaseBaking, phaseBackoff, phaseExited, phaseStopping, phaseStopped, phaseShutdown},
	phaseBaking:   {phaseRunning, phaseStopping, phaseStopped, phaseShutdown},
	phaseBackoff:  {phaseStarting, phaseBackoff, phaseExited, phaseStopping, phaseStopped, phaseShutdown},
	phaseExited:   {phaseStarting, phaseBackoff, phaseExited, phaseStopping, phaseStopped, phaseShutdown},
	phaseStopping: {phaseStopped, phaseShutdown},
	phaseStopped:  {phaseStarting, phaseBackoff, phaseExited, phaseShutdown},
	phaseShutdown: {},
}

// states maps each phase to the state status reports: one to one.
var states = map[phase]string{
	phaseBuilding: control.StateBuilding,
	phaseWaiting:  control.StateWaiting,
	phaseStarting: control.StateStarting,
	phaseRunning:  control.StateRunning,
	phaseBaking:   control.StateBaking,
	phaseBackoff:  control.StateBackoff,
	phaseExited:   control.StateExited,
	phaseStopping: control.StateStopping,
	phaseStopped:  control.StateStopped,
	phaseShutdown: control.StateShuttingDown,
}

func (ph phase) String() string { return states[ph] }

// allows reports whether a program in ph may move to next.
func (ph phase) allows(next phase) bool {
	return slices.Contains(transitions[ph], next)
}

// errIllegalTransition is logged when a program would make a move the
// table does not allow: a bug, which the tests look for.
func errIllegalTransition(from, to phase) error {
	return fmt.Errorf("supervisor: illegal phase transition %s → %s", from, to)
}
