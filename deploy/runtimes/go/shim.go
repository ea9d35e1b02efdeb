// souq-shim (go): runs one user snippet inside a Souq sandbox.
//
// Protocol, mode "execute" (argv[1], the default). The agent writes to fd 0:
//  1. one JSON header line: {"v":1,"code_len":N,"stdin_len":M}\n  (max 4096 bytes)
//  2. exactly N bytes of user code (UTF-8): a whole `package main` program
//  3. exactly M bytes of stdin for the user program
//
// The shim stores them as /tmp/souq/main.go and /tmp/souq/stdin, compiles the
// program with `go build` (compiler messages go to stderr; a failed build
// exits with the build's exit code), then makes the stdin file fd 0 and execs
// the program, so its exit code and stdout/stderr are the container's own.
// /tmp must be a tmpfs mounted exec. The shim never writes to stdout; on a bad
// header or a short read it prints "souq-shim: <reason>" to stderr, exits 70.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

const (
	workDir   = "/tmp/souq"
	maxHeader = 4096
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "souq-shim: "+format+"\n", args...)
	os.Exit(70)
}

func readHeader() (codeLen, stdinLen int64) {
	var line []byte
	one := make([]byte, 1)
	for {
		n, err := os.Stdin.Read(one) // byte by byte: consume nothing past the newline
		if n == 0 {
			if err == nil {
				continue
			}
			fail("short read in header (%d bytes, no newline)", len(line))
		}
		if one[0] == '\n' {
			break
		}
		line = append(line, one[0])
		if len(line) >= maxHeader {
			fail("header line longer than %d bytes", maxHeader)
		}
	}
	var hdr struct {
		V        *int   `json:"v"`
		CodeLen  *int64 `json:"code_len"`
		StdinLen *int64 `json:"stdin_len"`
	}
	if err := json.Unmarshal(line, &hdr); err != nil {
		fail("malformed header: %v", err)
	}
	if hdr.V == nil || *hdr.V != 1 {
		fail("malformed header: expected an object with v=1")
	}
	if hdr.CodeLen == nil || *hdr.CodeLen < 0 {
		fail("malformed header: code_len must be a non-negative integer")
	}
	if hdr.StdinLen == nil || *hdr.StdinLen < 0 {
		fail("malformed header: stdin_len must be a non-negative integer")
	}
	return *hdr.CodeLen, *hdr.StdinLen
}

func copyExact(n int64, path, what string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		fail("%v", err)
	}
	got, err := io.CopyN(f, os.Stdin, n)
	if err != nil && got < n {
		if errors.Is(err, io.EOF) {
			fail("short read in %s: got %d of %d bytes", what, got, n)
		}
		fail("reading %s: %v", what, err)
	}
	if err := f.Close(); err != nil {
		fail("%v", err)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	fail("cannot run go build: %v", err)
	return 70
}

func execute() {
	codeLen, stdinLen := readHeader()
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		fail("%v", err)
	}
	if err := os.Chmod(workDir, 0o700); err != nil {
		fail("%v", err)
	}
	mainGo, stdinPath, prog := workDir+"/main.go", workDir+"/stdin", workDir+"/prog"
	copyExact(codeLen, mainGo, "code")
	copyExact(stdinLen, stdinPath, "stdin")
	if err := os.Chdir(workDir); err != nil {
		fail("%v", err)
	}

	build := exec.Command("go", "build", "-p", "2", "-o", prog, mainGo)
	build.Env = append(os.Environ(),
		"GOCACHE="+workDir+"/gocache", "HOME="+workDir, "GOPATH="+workDir+"/gopath",
		"GO111MODULE=off", "CGO_ENABLED=0", "GOFLAGS=", "GOMAXPROCS=2")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr // nothing but the program writes to stdout
	if err := build.Run(); err != nil {
		os.Exit(exitCode(err))
	}

	fd, err := syscall.Open(stdinPath, syscall.O_RDONLY, 0)
	if err != nil {
		fail("%v", err)
	}
	if err := syscall.Dup3(fd, 0, 0); err != nil {
		fail("%v", err)
	}
	syscall.Close(fd)
	err = syscall.Exec(prog, []string{prog}, os.Environ())
	fail("exec %s: %v", prog, err)
}

func main() {
	mode := "execute"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "execute":
		execute()
	case "session":
		session()
	default:
		fail("unknown mode %q", mode)
	}
}
