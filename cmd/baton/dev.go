package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/baton-run/baton/supervisor"
	"github.com/baton-run/baton/supervisor/config"
)

const devDesc = `
Run the programs of the config file for development: each program with a
build block is built from its sources, and rebuilt and handed over
whenever a source changes, without dropping a request. A change during a
build cancels it and builds again; a failed build, or a binary that fails
to start, leaves the serving generation serving and shows why.

Each build writes its binary to a fresh path under .baton/build/ next to
the config file. One line per cycle says what changed, how long the build
and the start took, and the result; colour is used on a terminal unless
NO_COLOR is set. Programs without a build block run as with baton run.

Signals are those of baton run.`

func cmdDev(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("dev", "[-config FILE]", devDesc, stderr)
	file := fs.String("config", config.DefaultConfigFile, "the config `FILE`")
	if _, code, ok := parse(fs, args, noArgs); !ok {
		return code
	}
	sigs := notifySignals()
	sup, err := supervisor.New(supervisor.Config{
		File:      *file,
		LogOutput: stderr,
		Dev:       true,
		Console:   stdout,
		Color:     isTerminal(stdout) && os.Getenv("NO_COLOR") == "",
	})
	if err != nil {
		signal.Stop(sigs)
		fmt.Fprintf(stderr, "baton: %v\n", err)
		return exitError
	}
	return runSupervisor(sup, sigs)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
