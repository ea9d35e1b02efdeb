// souq-shim (go): the Go runtime's shim. Its mode is argv[1]:
//   - session (the default): a warm sandbox of one user that runs many executions,
//     each in a fresh process; the protocol and the run's rules are in session.go.
//   - serve: a long-lived instance of one deployed handler, compiled at load time;
//     see serve.go.
package main

import "os"

func main() {
	mode := "session"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "session":
		session()
	case "serve":
		serve()
	default:
		sessionFail("unknown mode %q", mode)
	}
}
