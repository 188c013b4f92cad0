package spawn

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// Func starts a process with the given files and returns it: its pid
// and a function that waits for its exit. PID 1 supplies one that
// cooperates with its zombie reaper; OS serves everywhere else.
type Func func(p proto.ExecParams, stdin, stdout, stderr *os.File) (Process, error)

// Process is a started process.
type Process struct {
	Pid  int // the leader of its own session and process group (Prepare sets Setsid)
	Wait func() proto.ExecResult
}

// OS starts processes directly, resolved by Prepare against "/".
func OS(p proto.ExecParams, stdin, stdout, stderr *os.File) (Process, error) {
	c, err := Prepare("/", p)
	if err != nil {
		return Process{}, err
	}
	proc, err := os.StartProcess(c.Path, c.Args, &os.ProcAttr{Dir: c.Dir, Env: c.Env, Files: []*os.File{stdin, stdout, stderr}, Sys: c.Sys})
	if err != nil {
		return Process{}, err
	}
	return Process{Pid: proc.Pid, Wait: func() proto.ExecResult {
		st, err := proc.Wait()
		if err != nil {
			return proto.ExecResult{ExitCode: 255}
		}
		return ExitResult(st.Sys().(syscall.WaitStatus))
	}}, nil
}

// Stoppable is f whose processes are killed, with their whole process
// group, once stop closes before they exit: a caller that gave up on a
// command does not leave it running.
func Stoppable(f Func, stop <-chan struct{}) Func {
	return func(p proto.ExecParams, stdin, stdout, stderr *os.File) (Process, error) {
		proc, err := f(p, stdin, stdout, stderr)
		if err != nil || stop == nil {
			return proc, err
		}
		exited := make(chan struct{})
		go func() {
			select {
			case <-stop:
				_ = unix.Kill(-proc.Pid, unix.SIGKILL)
			case <-exited:
			}
		}()
		wait := proc.Wait
		proc.Wait = func() proto.ExecResult {
			defer close(exited)
			return wait()
		}
		return proc, nil
	}
}

// ExitResult turns a wait status into an exec result (128+n for a signal,
// as shells report it).
func ExitResult(ws syscall.WaitStatus) proto.ExecResult {
	if ws.Signaled() {
		return proto.ExecResult{ExitCode: 128 + int(ws.Signal()), Signal: ws.Signal().String()}
	}
	return proto.ExecResult{ExitCode: ws.ExitStatus()}
}

// RunPipes runs p with its output copied to stdout and stderr (nil
// discards) and, when stdin is non-nil, its input copied from stdin; it
// returns once the process exited and its output was copied. Copying
// stdin stops when stdin ends or the process is gone: a stdin that never
// ends is the caller's to close.
func RunPipes(spawn Func, p proto.ExecParams, stdin io.Reader, stdout, stderr io.Writer) (proto.ExecResult, error) {
	var child []*os.File // the child's ends, closed once it started
	var ours []*os.File  // ours, closed if it does not start
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	fail := func(err error) (proto.ExecResult, error) {
		for _, f := range ours {
			f.Close()
		}
		return proto.ExecResult{}, err
	}
	var in *os.File
	var inW *os.File
	if stdin == nil {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return fail(err)
		}
		in = f
	} else {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		in, inW = r, w
		ours = append(ours, w)
	}
	child = append(child, in)
	outR, outW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	child, ours = append(child, outW), append(ours, outR)
	errR, errW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	child, ours = append(child, errW), append(ours, errR)
	proc, err := spawn(p, in, outW, errW)
	if err != nil {
		return fail(fmt.Errorf("exec %q: %w", p.Args, err))
	}
	for _, f := range child {
		f.Close()
	}
	child = nil

	var copies sync.WaitGroup
	pump := func(r *os.File, w io.Writer) {
		defer r.Close()
		if w == nil {
			w = io.Discard
		}
		_, _ = io.Copy(w, r)
	}
	copies.Go(func() { pump(outR, stdout) })
	copies.Go(func() { pump(errR, stderr) })
	if inW != nil {
		go func() {
			defer inW.Close()
			_, _ = io.Copy(inW, stdin)
		}()
	}
	res := proc.Wait()
	copies.Wait()
	return res, nil
}

// RunTTY runs p on a new terminal of p.Rows x p.Cols: stdin is typed
// into it, what the process writes goes to out, and each size received on
// resize resizes it. Like RunPipes, it does not wait for stdin to end.
func RunTTY(spawn Func, p proto.ExecParams, stdin io.Reader, out io.Writer, resize <-chan proto.Winsize) (proto.ExecResult, error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return proto.ExecResult{}, fmt.Errorf("opening a terminal: %w", err)
	}
	defer ptmx.Close()
	if p.Rows > 0 && p.Cols > 0 {
		_ = setSize(ptmx, p.Rows, p.Cols)
	}
	p.Tty = true
	proc, err := spawn(p, tty, tty, tty)
	tty.Close()
	if err != nil {
		return proto.ExecResult{}, fmt.Errorf("exec %q: %w", p.Args, err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, ptmx) // ends with EIO once no process holds the terminal
	}()
	if stdin != nil {
		go func() { _, _ = io.Copy(ptmx, stdin) }()
	}
	stop, resized := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(resized)
		for {
			select {
			case ws, ok := <-resize:
				if !ok {
					return
				}
				_ = setSize(ptmx, ws.Rows, ws.Cols)
			case <-stop:
				return
			}
		}
	}()
	res := proc.Wait()
	close(stop)
	<-resized
	// A background process may keep the terminal open: take what the
	// process wrote before it exited, then stop reading.
	_ = ptmx.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	<-copied
	return res, nil
}

// setSize resizes a terminal. It goes through SyscallConn: File.Fd
// would switch ptmx to blocking mode and defeat its read deadline.
func setSize(ptmx *os.File, rows, cols uint16) error {
	rc, err := ptmx.SyscallConn()
	if err != nil {
		return err
	}
	cerr := rc.Control(func(fd uintptr) {
		err = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
	if cerr != nil {
		return cerr
	}
	return err
}
