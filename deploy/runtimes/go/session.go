// souq-shim (go), mode "session": one long-lived sandbox of ONE user runs
// many executions, each compiled and run in fresh processes.
//
// Protocol (lengths in bytes). The agent writes to fd 0, repeatedly:
//
//	{"v":1,"id":<u64>,"code_len":N,"stdin_len":M,"timeout_ms":T,"output_limit":L
//	 [,"traceparent":"00-<32 hex>-<16 hex>-<2 hex>"]}\n
//	(one line, at most 4096 bytes with its newline), then N bytes of code
//	(a whole `package main` program), then M bytes of stdin.
//
// Other keys are ignored. A traceparent (a string of at most 128 characters in
// the W3C shape; anything else is ignored) becomes the program's TRACEPARENT
// environment variable (not the build's).
//
// The shim answers on fd 1, one response per request, in order:
//
//	{"id":..,"exit_code":<int|null>,"signal":<int|null>,"timed_out":b,
//	 "truncated":b,"oom_killed":b,"duration_ms":<int>,"stdout_len":A,
//	 "stderr_len":B,"clean":b,"start_ns":S,"end_ns":E}\n  then A bytes of
//	 stdout, then B bytes of stderr.
//
// S and E are the shim's wall clock (Unix epoch nanoseconds) right after it
// read the whole request and right before it writes the answer.
//
// EOF on fd 0 between requests: exit 0. Malformed header or short read: one
// "souq-shim: ..." line on stderr, exit 70. Nothing else is written to fd 1.
//
// Per request: /tmp/souq/run is removed (never through symlinks) and made
// again, main.go is written there and built with `go build -p 2` into
// /tmp/souq/run/prog with GOCACHE=/tmp/souq/gocache, which is kept for the
// session (the warm path). The compiler's output is the run's output; a failed
// build reports the build's status. Then prog runs with the stdin bytes as an
// (unlinked) file on fd 0 and pipes on fd 1 and 2. Build and program each get
// their own process group; T covers both. After the program exits, every
// other process in the container but PID 1 and the shim is SIGKILLed.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const (
	sessionRoot        = "/tmp/souq"
	sessionRunDir      = sessionRoot + "/run"
	sessionGoCache     = sessionRoot + "/gocache"
	sessionGoHome      = sessionRoot + "/home"
	sessionGoPath      = sessionRoot + "/gopath"
	sessionStdinFile   = sessionRoot + "/stdin"
	sessionBinCache    = sessionRoot + "/bincache"
	sessionBinCacheMax = 16 << 20 // bytes of cached programs
	sessionMaxHeader   = 4096     // header line including its newline
	sessionSweepFor    = time.Second
	sessionDrainGrace  = 500 * time.Millisecond
	sessionMinFree     = 16 << 20 // below this much free space in /tmp, the go cache is dropped
)

var (
	// Where answers go: stdout, or the agent's socket.
	sessionOut     io.Writer = os.Stdout
	sessionPathVar           = "PATH=/usr/local/bin:/usr/bin:/bin"
	// Build variables, given to `go build`.
	sessionGoVars = []string{
		"GOCACHE=" + sessionGoCache, "GOPATH=" + sessionGoPath, "GO111MODULE=off",
		"CGO_ENABLED=0", "GOFLAGS=", "GOMAXPROCS=2",
	}
	sessionBuildEnv = append([]string{sessionPathVar, "HOME=" + sessionGoHome, "LANG=C.UTF-8"}, sessionGoVars...)
	// The program gets nothing but these; GOMAXPROCS keeps its threads within the
	// sandbox's pids limit on hosts with many cores.
	sessionProgEnv = []string{sessionPathVar, "HOME=/tmp", "LANG=C.UTF-8", "GOMAXPROCS=2"}
	// The sweep kills every process it can see: only inside a sandbox, where
	// the shim is PID 1 or PID 1's child. Elsewhere only the run's process
	// groups are killed.
	sessionInSandbox = os.Getpid() == 1 || os.Getppid() == 1
	// A program whose main.go was built before in this session is not built
	// again: its binary is kept in sessionBinCache, keyed by the source's
	// sha256 (toolchain, flags and environment are fixed for the session).
	// Off while GOPATH/src exists, since a program could import packages a
	// run has changed there. SOUQ_GO_BINCACHE=0 turns it off.
	sessionBinCacheOn = os.Getenv("SOUQ_GO_BINCACHE") != "0"
)

type sessionRequest struct {
	id                uint64
	codeLen, stdinLen int64
	timeout           time.Duration
	limit             int64
	t0                time.Time // when the request was fully read
	traceparent       string    // "" when none, or not in the W3C shape
	codeSum           string    // hex sha256 of the code
	deadline          time.Time
}

type sessionResult struct {
	exitCode, signal               *int
	timedOut, truncated, oomKilled bool
	duration                       time.Duration
	clean                          bool
}

func sessionFail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "souq-shim: "+format+"\n", args...)
	os.Exit(70)
}

func sessionWarn(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "souq-shim: "+format+"\n", args...)
}

// sessionReadHeader returns ok=false on EOF before the first byte.
func sessionReadHeader(in *bufio.Reader) (req sessionRequest, ok bool) {
	line, err := in.ReadSlice('\n')
	if err != nil {
		switch {
		case errors.Is(err, bufio.ErrBufferFull) || len(line) >= sessionMaxHeader:
			sessionFail("header line longer than %d bytes", sessionMaxHeader)
		case errors.Is(err, io.EOF) && len(line) == 0:
			return req, false
		case errors.Is(err, io.EOF):
			sessionFail("short read in header (%d bytes, no newline)", len(line))
		default:
			sessionFail("reading stdin: %v", err)
		}
	}
	if len(line) > sessionMaxHeader {
		sessionFail("header line longer than %d bytes", sessionMaxHeader)
	}
	var hdr struct {
		V           *int64  `json:"v"`
		ID          *uint64 `json:"id"`
		CodeLen     *int64  `json:"code_len"`
		StdinLen    *int64  `json:"stdin_len"`
		TimeoutMs   *int64  `json:"timeout_ms"`
		OutputLimit *int64  `json:"output_limit"`

		// Raw, so that a traceparent of any other type is ignored, not fatal.
		Traceparent json.RawMessage `json:"traceparent"`
	}
	if err := json.Unmarshal(line, &hdr); err != nil {
		sessionFail("malformed header: %v", err)
	}
	if hdr.V == nil || *hdr.V != 1 {
		sessionFail("malformed header: expected an object with v=1")
	}
	var tp string
	if json.Unmarshal(hdr.Traceparent, &tp) == nil && validTraceparent(tp) {
		req.traceparent = tp
	}
	if hdr.ID == nil {
		sessionFail("malformed header: id must be an integer in 0..2^64-1")
	}
	for _, f := range []struct {
		name string
		v    *int64
	}{{"code_len", hdr.CodeLen}, {"stdin_len", hdr.StdinLen}, {"timeout_ms", hdr.TimeoutMs}, {"output_limit", hdr.OutputLimit}} {
		if f.v == nil || *f.v < 0 {
			sessionFail("malformed header: %s must be a non-negative integer", f.name)
		}
	}
	req.id, req.codeLen, req.stdinLen, req.limit = *hdr.ID, *hdr.CodeLen, *hdr.StdinLen, *hdr.OutputLimit
	req.timeout = time.Duration(*hdr.TimeoutMs) * time.Millisecond
	if *hdr.TimeoutMs > int64((1<<63-1)/time.Millisecond) {
		req.timeout = 1<<63 - 1
	}
	return req, true
}

// validTraceparent says whether tp is a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>
// (lowercase hex; any version). Its fixed length of 55 keeps it within the 128
// characters the agent may send.
func validTraceparent(tp string) bool {
	if len(tp) != 55 {
		return false
	}
	for i := 0; i < len(tp); i++ {
		c := tp[i]
		if i == 2 || i == 35 || i == 52 {
			if c != '-' {
				return false
			}
		} else if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// sessionCopyExact copies n bytes of the request to a new file and returns their hex sha256.
func sessionCopyExact(in *bufio.Reader, n int64, path, what string) string {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		sessionFail("%v", err)
	}
	h := sha256.New()
	got, err := io.CopyN(io.MultiWriter(f, h), in, n)
	if got < n {
		if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			sessionFail("short read in %s: got %d of %d bytes", what, got, n)
		}
		// reading failed, or the file could not be written (/tmp is full): the sandbox is unusable
		sessionFail("copying %s: %v", what, err)
	}
	if err := f.Close(); err != nil {
		sessionFail("writing %s: %v", what, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sessionRemoveTree removes p without following symlinks (os.RemoveAll works
// with unlinkat on directory fds); directories a run made unwritable are made
// writable first.
func sessionRemoveTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	var fix func(d string)
	fix = func(d string) {
		st, err := os.Lstat(d)
		if err != nil || !st.IsDir() {
			return
		}
		_ = os.Chmod(d, 0o700)
		f, err := os.Open(d)
		if err != nil {
			return
		}
		names, _ := f.Readdirnames(-1)
		f.Close()
		for _, n := range names {
			fix(d + "/" + n)
		}
	}
	fix(p)
	return os.RemoveAll(p)
}

func sessionEnsureDir(p string) {
	if st, err := os.Lstat(p); err == nil && !st.IsDir() {
		_ = os.Remove(p)
	}
	if err := os.MkdirAll(p, 0o700); err != nil {
		sessionFail("%v", err)
	}
}

// sessionPrepare makes a fresh, empty run dir and drops the go cache when /tmp is nearly full.
func sessionPrepare() {
	sessionEnsureDir(sessionRoot)
	if err := sessionRemoveTree(sessionRunDir); err != nil {
		// keep going with a fresh directory; the stuck one is out of the way
		aside := fmt.Sprintf("%s/stuck-%d", sessionRoot, time.Now().UnixNano())
		if err2 := os.Rename(sessionRunDir, aside); err2 != nil {
			sessionFail("cannot remove %s: %v", sessionRunDir, err)
		}
		sessionWarn("cannot remove %s (%v); moved it to %s", sessionRunDir, err, aside)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(sessionRoot, &fs); err == nil && int64(fs.Bavail)*int64(fs.Bsize) < sessionMinFree {
		_ = sessionRemoveTree(sessionGoCache)
		_ = sessionRemoveTree(sessionBinCache)
	}
	if err := os.Mkdir(sessionRunDir, 0o700); err != nil {
		sessionFail("%v", err)
	}
	sessionEnsureDir(sessionGoHome)
}

func sessionReadOomKills() (int64, bool) {
	for _, f := range []string{"/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range bytes.Split(data, []byte{'\n'}) {
			if bytes.HasPrefix(line, []byte("oom_kill ")) {
				if n, err := strconv.ParseInt(string(bytes.TrimSpace(line[len("oom_kill "):])), 10, 64); err == nil {
					return n, true
				}
			}
		}
	}
	return 0, false
}

// sessionProcState says whether pid is gone, a zombie (it holds its pid until
// PID 1 reaps it) or alive.
func sessionProcState(pid int) (alive, zombie bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false, false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return false, false
	}
	switch data[i+2] {
	case 'Z', 'X', 'x':
		return false, true
	}
	return true, false
}

// sessionSweep SIGKILLs every process but PID 1 and the shim until none is
// left or sessionSweepFor has passed, and reports whether none is alive. It
// also waits (within that time) for PID 1 to reap the zombies, which count
// against the pids limit.
func sessionSweep() bool {
	self := os.Getpid()
	deadline := time.Now().Add(sessionSweepFor)
	for {
		_ = syscall.Kill(-1, syscall.SIGKILL) // all we may signal but PID 1 and ourselves
		alive, zombies := 0, 0
		d, err := os.Open("/proc")
		if err != nil {
			return false
		}
		names, _ := d.Readdirnames(-1)
		d.Close()
		for _, name := range names {
			pid, err := strconv.Atoi(name)
			if err != nil || pid == 1 || pid == self {
				continue
			}
			a, z := sessionProcState(pid)
			if z {
				zombies++
			}
			if a {
				alive++
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if alive == 0 && zombies == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return alive == 0
		}
		time.Sleep(time.Millisecond)
	}
}

// sessionOutput keeps at most limit bytes of stdout+stderr, first come first kept.
type sessionOutput struct {
	mu        sync.Mutex
	limit     int64
	kept      int64
	buf       [2]bytes.Buffer
	truncated bool
	over      chan struct{} // closed when the limit is exceeded
	wg        sync.WaitGroup
}

func (o *sessionOutput) collect(which int, r *os.File) {
	defer o.wg.Done()
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Read(chunk)
		if n > 0 {
			o.mu.Lock()
			if !o.truncated {
				room := o.limit - o.kept
				if int64(n) > room {
					o.buf[which].Write(chunk[:room])
					o.kept += room
					o.truncated = true
					close(o.over)
				} else {
					o.buf[which].Write(chunk[:n])
					o.kept += int64(n)
				}
			}
			o.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func sessionGoTool() string {
	for _, p := range []string{"/usr/local/bin/go", "/usr/bin/go", "/bin/go", "/usr/lib/go/bin/go", "/usr/local/go/bin/go"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return "go"
}

// sessionStartWait starts one process of the run in its own process group
// and waits for it, killing the group at the deadline or when output
// overflows. stop is true when the run must not go on (failed, killed, timed
// out, truncated).
func sessionStartWait(newCmd func() *exec.Cmd, req *sessionRequest, out *sessionOutput, res *sessionResult) (status syscall.WaitStatus, stop bool, err error) {
	var cmd *exec.Cmd
	for retryUntil := time.Now().Add(sessionSweepFor); ; {
		cmd = newCmd() // an exec.Cmd cannot be started twice
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		err := cmd.Start()
		if err == nil {
			break
		}
		// EAGAIN: at the pids limit, e.g. while PID 1 still reaps what the sweep killed
		if !errors.Is(err, syscall.EAGAIN) || time.Now().After(retryUntil) {
			return 0, true, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	pid := cmd.Process.Pid
	// Let the OOM killer prefer the run (and all it forks) over the shim.
	_ = os.WriteFile("/proc/"+strconv.Itoa(pid)+"/oom_score_adj", []byte("1000"), 0)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	timer := time.NewTimer(time.Until(req.deadline))
	defer timer.Stop()
	killed := false
	select {
	case <-done:
	case <-timer.C:
		res.timedOut = true
		killed = true
	case <-out.over:
		killed = true
	}
	if killed {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-done
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ws, killed || !ws.Exited() || ws.ExitStatus() != 0, nil
}

func sessionBinCacheUsable() bool {
	if !sessionBinCacheOn {
		return false
	}
	_, err := os.Lstat(sessionGoPath + "/src")
	return errors.Is(err, os.ErrNotExist)
}

// sessionBinCacheGet links a cached binary for sum to dst.
func sessionBinCacheGet(sum, dst string) bool {
	if !sessionBinCacheUsable() {
		return false
	}
	p := sessionBinCache + "/" + sum
	st, err := os.Lstat(p)
	if err != nil || !st.Mode().IsRegular() || os.Link(p, dst) != nil {
		return false
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now) // most recently used
	return true
}

// sessionBinCachePut keeps src as the binary for sum and evicts the least
// recently used binaries beyond sessionBinCacheMax bytes.
func sessionBinCachePut(sum, src string) {
	if st, err := os.Lstat(src); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 || !sessionBinCacheUsable() {
		return // not an executable (a package that is not main builds to an archive)
	}
	if st, err := os.Lstat(sessionBinCache); err != nil || !st.IsDir() {
		_ = sessionRemoveTree(sessionBinCache)
		if os.Mkdir(sessionBinCache, 0o700) != nil {
			return
		}
	}
	tmp := sessionBinCache + "/tmp-" + sum
	_ = os.Remove(tmp)
	if os.Link(src, tmp) != nil || os.Rename(tmp, sessionBinCache+"/"+sum) != nil {
		_ = os.Remove(tmp)
		return
	}
	ents, err := os.ReadDir(sessionBinCache)
	if err != nil {
		return
	}
	type entry struct {
		name  string
		size  int64
		mtime time.Time
	}
	var all []entry
	var total int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			all = append(all, entry{e.Name(), info.Size(), info.ModTime()})
			total += info.Size()
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mtime.Before(all[j].mtime) })
	for i := 0; total > sessionBinCacheMax && i < len(all)-1; i++ {
		_ = os.Remove(sessionBinCache + "/" + all[i].name)
		total -= all[i].size
	}
}

func sessionRun(req *sessionRequest, stdinFile *os.File) ([]byte, []byte, sessionResult) {
	res := sessionResult{clean: true}
	oomBefore, oomOK := sessionReadOomKills()
	out := &sessionOutput{limit: req.limit, over: make(chan struct{})}
	outR, outW, err := os.Pipe()
	if err != nil {
		sessionFail("pipe: %v", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		sessionFail("pipe: %v", err)
	}
	out.wg.Add(2)
	go out.collect(0, outR)
	go out.collect(1, errR)

	progPath := sessionRunDir + "/prog"
	var ws syscall.WaitStatus
	stop := false
	if !sessionBinCacheGet(req.codeSum, progPath) {
		build := func() *exec.Cmd {
			c := exec.Command(sessionGoTool(), "build", "-p", "2", "-o", progPath, "main.go")
			c.Dir, c.Env, c.Stdout, c.Stderr = sessionRunDir, sessionBuildEnv, outW, errW
			return c
		}
		var err error
		if ws, stop, err = sessionStartWait(build, req, out, &res); err != nil {
			sessionFail("cannot start go build: %v", err)
		}
		if !stop {
			sessionBinCachePut(req.codeSum, progPath)
		}
	}
	if !stop {
		prog := func() *exec.Cmd {
			c := exec.Command(progPath)
			c.Dir, c.Env = sessionRunDir, sessionProgEnv
			if req.traceparent != "" {
				c.Env = append(append([]string(nil), sessionProgEnv...), "TRACEPARENT="+req.traceparent)
			}
			c.Stdin, c.Stdout, c.Stderr = stdinFile, outW, errW
			return c
		}
		var err error
		if ws, _, err = sessionStartWait(prog, req, out, &res); err != nil {
			// e.g. a package that is not main builds to a non-executable archive
			fmt.Fprintf(errW, "souq-shim: cannot run the program: %v\n", err)
			ws = syscall.WaitStatus(126 << 8) // exited, status 126, like a shell
		}
	}
	res.duration = time.Since(req.t0)
	outW.Close()
	errW.Close()
	stdinFile.Close()
	if ws.Signaled() {
		s := int(ws.Signal())
		res.signal = &s
	} else {
		c := ws.ExitStatus()
		res.exitCode = &c
	}

	if sessionInSandbox {
		res.clean = sessionSweep()
	}
	drained := make(chan struct{})
	go func() { out.wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(sessionDrainGrace):
		res.clean = false // something still holds the pipes
		outR.Close()
		errR.Close()
		<-drained
	}
	outR.Close()
	errR.Close()
	if oomAfter, ok := sessionReadOomKills(); ok && oomOK && oomAfter > oomBefore {
		res.oomKilled = true
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	res.truncated = out.truncated
	return out.buf[0].Bytes(), out.buf[1].Bytes(), res
}

func sessionWriteResponse(req *sessionRequest, stdout, stderr []byte, r sessionResult) {
	num := func(p *int) string {
		if p == nil {
			return "null"
		}
		return strconv.Itoa(*p)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"id":%d,"exit_code":%s,"signal":%s,"timed_out":%t,"truncated":%t,"oom_killed":%t,"duration_ms":%d,"stdout_len":%d,"stderr_len":%d,"clean":%t,"start_ns":%d,"end_ns":%d}`+"\n",
		req.id, num(r.exitCode), num(r.signal), r.timedOut, r.truncated, r.oomKilled,
		r.duration.Milliseconds(), len(stdout), len(stderr), r.clean, req.t0.UnixNano(), time.Now().UnixNano())
	b.Write(stdout)
	b.Write(stderr)
	if _, err := sessionOut.Write(b.Bytes()); err != nil {
		sessionFail("writing a response: %v", err)
	}
}

// session serves requests until EOF on stdin.
func session() {
	if runtime.NumCPU() > 2 {
		runtime.GOMAXPROCS(2) // the shim's threads count against the pids limit
	}
	// Not dumpable: a run (same uid) can then neither open /proc/<shim>/fd/*
	// (and write fake frames to our stdout) nor ptrace the shim.
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0)
	if !sessionInSandbox {
		sessionWarn("not PID 1 or its child: the sweep is limited to the run's process groups")
	}
	// A buffer of exactly the header limit: ReadSlice fails as soon as that
	// much has arrived without a newline. Bodies bypass it in large reads.
	// The channel to the agent: the Unix socket named after the mode (in a directory
	// the agent mounts read-only), or else stdin/stdout.
	var source io.Reader = os.Stdin
	if len(os.Args) > 2 {
		conn, err := net.Dial("unix", os.Args[2])
		if err != nil {
			sessionFail("cannot connect to %s: %v", os.Args[2], err)
		}
		source, sessionOut = conn, conn
	}
	in := bufio.NewReaderSize(source, sessionMaxHeader)
	for {
		req, ok := sessionReadHeader(in)
		if !ok {
			os.Exit(0)
		}
		sessionPrepare()
		req.codeSum = sessionCopyExact(in, req.codeLen, sessionRunDir+"/main.go", "code")
		_ = sessionRemoveTree(sessionStdinFile)
		sessionCopyExact(in, req.stdinLen, sessionStdinFile, "stdin")
		stdinFile, err := os.Open(sessionStdinFile)
		if err != nil {
			sessionFail("%v", err)
		}
		_ = os.Remove(sessionStdinFile) // fd 0 keeps it; /dev/stdin still opens it
		req.t0 = time.Now()
		req.deadline = req.t0.Add(req.timeout)
		stdout, stderr, res := sessionRun(&req, stdinFile)
		sessionWriteResponse(&req, stdout, stderr, res)
		if err := sessionRemoveTree(sessionRunDir); err != nil {
			sessionWarn("cannot remove %s: %v", sessionRunDir, err)
		}
	}
}
