// souq-shim (go): the Go runtime's shim. It runs in `session` mode (argv[1], the
// default): a warm sandbox of one user that runs many executions, each in a fresh
// process. The protocol and the run's rules are in session.go.
package main

import "os"

func main() {
	mode := "session"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	if mode != "session" {
		sessionFail("unknown mode %q", mode)
	}
	session()
}
