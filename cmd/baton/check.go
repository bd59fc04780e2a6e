package main

import (
	"fmt"
	"io"

	"github.com/baton-run/baton/supervisor"
	"github.com/baton-run/baton/supervisor/config"
	"github.com/hashicorp/hcl/v2"
)

const checkDesc = `
Validate the config file without starting anything. Each problem is
printed with its position (config.hcl:4,3-15) and what to do about it;
a warning (a directory, or a command path without a build block, that
is not there yet) does not fail the check.
A program with a user is checked against the file system too: that
user must be able to execute the program's command and enter its
directory, and, when the program does not link the child package, the
exec shim that sets its LISTEN_PID (/bin/sh, or baton's own binary when
the program's environment has names a shell would drop).
Exit status 1 when the file has errors; warnings alone exit 0.`

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "[-config FILE]", checkDesc, stderr)
	file := fs.String("config", config.DefaultConfigFile, "the config `FILE`")
	if _, code, ok := parse(fs, args, noArgs); !ok {
		return code
	}
	f, diags := config.Load(*file)
	for _, d := range diags {
		kind := "error"
		if d.Severity == hcl.DiagWarning {
			kind = "warning"
		}
		fmt.Fprintf(stderr, "%s: %s\n", kind, config.FormatDiagnostic(d))
	}
	if diags.HasErrors() {
		return exitError
	}
	failed := false
	for _, p := range f.Programs {
		if err := supervisor.CheckUser(p); err != nil {
			fmt.Fprintf(stderr, "error: program %q: %v\n", p.Name, err)
			failed = true
		}
	}
	if failed {
		return exitError
	}
	fmt.Fprintf(stdout, "%s: ok, %d program(s)\n", *file, len(f.Programs))
	for _, p := range f.Programs {
		fmt.Fprintf(stdout, "  %s:", p.Name)
		for _, l := range p.Listeners {
			fmt.Fprintf(stdout, " %s=%s", l.Name, l.Address)
		}
		fmt.Fprintf(stdout, " ready=%s stop=%s/%v\n", p.Ready.Mode, signalName(p), p.Stop.Timeout)
	}
	return exitOK
}

func signalName(p *config.Program) string {
	return config.SignalName(p.Stop.Signal)
}
