// Command emsctl is the operator's command line for emsd. Commands that
// change or read the service's state talk to its admin API (bbolt is locked
// by the running server, so the CLI never opens it); offline commands such as
// `event validate` reuse the library code directly.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes distinguish what went wrong, so scripts can branch on them.
const (
	exitOK       = 0
	exitFailure  = 1 // the server or the operation failed
	exitUsage    = 2 // the command line was wrong
	exitNotFound = 3
)

// exitError carries an exit code with an error message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(os.Stderr, "emsctl:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitUsage // cobra's own errors are about the command line
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "emsctl",
		Short:         "Operate an ems events management service",
		Long:          "emsctl manages subscriptions, deliveries and reference data of a running emsd, and validates event messages offline.",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newEventCmd())
	return root
}
