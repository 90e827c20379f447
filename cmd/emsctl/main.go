// Command emsctl is the operator's command line for emsd. Commands that
// change or read the service's state talk to its admin API (bbolt is locked
// by the running server, so the CLI never opens it); offline commands such as
// `event validate` reuse the library code directly.
//
// It is a thin client in the manner of amtool: every command is one or two
// HTTP calls and a rendering of the answer as a table, JSON or YAML.
package main

import (
	"errors"
	"fmt"
	"io"
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

func usageErr(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
}

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd(&globals{stdin: stdin})
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "emsctl:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitUsage // cobra's own errors are about the command line
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "emsctl",
		Short: "Operate an ems events management service",
		Long: `emsctl manages subscriptions, deliveries and reference data of a running emsd
through its admin API, and validates event messages offline.

The admin API address, the public FHIR API address and the operator token come
from flags, then the environment (EMS_SERVER, EMS_PUBLIC, EMS_TOKEN), then the
config file ($XDG_CONFIG_HOME/emsctl/config.yaml or the platform's equivalent):

  server: http://127.0.0.1:8081
  public: http://127.0.0.1:8080
  token: <operator token>

Exit codes: 0 success, 1 the server or the operation failed, 2 usage error
(including input the server refused as malformed), 3 not found.`,
		Example: `  emsctl subscription pending
  emsctl subscription approve 3f6c0e1a-... --note "checked with the practice"
  emsctl delivery list --state dead -o json
  emsctl replay --endpoint https://hooks.example.org/ems --yes`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.resolve(cmd)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr("%w", err) })
	g.bind(root)
	root.AddCommand(
		newSubscriptionCmd(g),
		newDeliveryCmd(g),
		newDeadLetterCmd(g),
		newReplayCmd(g),
		newEndpointCmd(g),
		newEventCmd(g),
		newRefdataCmd(g),
		newStatusCmd(g),
		newAuditCmd(g),
	)
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Example = `  source <(emsctl completion bash)
  emsctl completion zsh > "${fpath[1]}/_emsctl"
  emsctl completion fish > ~/.config/fish/completions/emsctl.fish`
			for _, sh := range c.Commands() {
				sh.Example = "  emsctl completion " + sh.Name() + " --help"
			}
		}
	}
	return root
}
