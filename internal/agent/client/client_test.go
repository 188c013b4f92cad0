package client_test

// The client against the real guest server over an in-process pipe: both
// ends of the protocol, as the daemon and the agent run them.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/agent/server"
	"github.com/bangerdev/banger/internal/agent/sshd"
	"github.com/bangerdev/banger/internal/agent/tree"
	"github.com/bangerdev/banger/internal/sshkey"
)

func pair(t *testing.T, s *server.Server) *client.Client {
	t.Helper()
	a, b := net.Pipe()
	go s.Serve(b)
	c := client.New(a)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPingExecShutdown(t *testing.T) {
	shut := make(chan struct{})
	c := pair(t, &server.Server{
		Ping:     func() proto.PingResult { return proto.PingResult{Uptime: 1.5} },
		Shutdown: func() { close(shut) },
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if r, err := c.Ping(ctx); err != nil || r.Uptime != 1.5 {
		t.Fatalf("ping = %+v, %v", r, err)
	}

	var out, errb bytes.Buffer
	r, err := c.Exec(ctx, proto.ExecParams{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, nil, &out, &errb)
	if err != nil || r.ExitCode != 3 || out.String() != "out\n" || errb.String() != "err\n" {
		t.Fatalf("exec = %+v, %v, %q, %q", r, err, out.String(), errb.String())
	}

	// stdin streams in; a large output streams out in many frames.
	in := strings.Repeat("0123456789abcdef", 100000)
	out.Reset()
	r, err = c.Exec(ctx, proto.ExecParams{Args: []string{"cat"}}, strings.NewReader(in), &out, nil)
	if err != nil || r.ExitCode != 0 || out.String() != in {
		t.Fatalf("cat = %+v, %v, %d bytes back of %d", r, err, out.Len(), len(in))
	}

	r, err = c.Exec(ctx, proto.ExecParams{Args: []string{"sh", "-c", "kill -TERM $$"}}, nil, nil, nil)
	if err != nil || r.ExitCode != 143 || r.Signal != "terminated" {
		t.Fatalf("signaled exec = %+v, %v", r, err)
	}
	if _, err := c.Exec(ctx, proto.ExecParams{Args: []string{"/no/such/binary"}}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "/no/such/binary") {
		t.Fatalf("missing binary = %v", err)
	}
	// Calls run concurrently on one link.
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := c.Exec(ctx, proto.ExecParams{Args: []string{"sleep", "0.2"}}, nil, nil, nil)
			done <- err
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Call(ctx, "nope", nil, nil); err == nil || !strings.Contains(err.Error(), "unknown method") {
		t.Fatalf("unknown method = %v", err)
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-shut:
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown not called")
	}
}

func TestLinkLossFailsCalls(t *testing.T) {
	a, b := net.Pipe()
	c := client.New(a)
	b.Close()
	<-c.Done()
	if _, err := c.Ping(context.Background()); err == nil {
		t.Fatal("ping over a dead link succeeded")
	}
}

func TestFiles(t *testing.T) {
	c := pair(t, &server.Server{})
	ctx := context.Background()
	dir := t.TempDir()
	target := filepath.Join(dir, "notes.txt")
	body := strings.Repeat("a line of notes\n", 50000)
	n, err := c.WriteFile(ctx, target, 0o600, strings.NewReader(body))
	if err != nil || n != int64(len(body)) {
		t.Fatalf("WriteFile = %d, %v", n, err)
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("written file: %v, %v", fi, err)
	}
	var back bytes.Buffer
	n, err = c.ReadFile(ctx, target, &back)
	if err != nil || n != int64(len(body)) || back.String() != body {
		t.Fatalf("ReadFile = %d, %v (%d bytes back)", n, err, back.Len())
	}
	if _, err := c.ReadFile(ctx, filepath.Join(dir, "missing"), &back); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("reading a missing file = %v", err)
	}
	if _, err := c.WriteFile(ctx, filepath.Join(dir, "no", "dir", "f"), 0, strings.NewReader("x")); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

// A write whose caller goes away mid-transfer leaves neither the file
// nor a temporary one.
func TestWriteInterrupted(t *testing.T) {
	a, b := net.Pipe()
	served := make(chan struct{})
	go func() { (&server.Server{}).Serve(b); close(served) }()
	c := client.New(a)
	dir := t.TempDir()
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("the first half"))
		c.Close() // the link goes down before the rest
	}()
	if _, err := c.WriteFile(context.Background(), filepath.Join(dir, "f"), 0, pr); err == nil {
		t.Fatal("an interrupted write succeeded")
	}
	<-served // the server's calls are over
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("an interrupted write left %v", entries)
	}
}

func TestExecTTY(t *testing.T) {
	c := pair(t, &server.Server{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	r, err := c.ExecTTY(ctx, proto.ExecParams{Args: []string{"sh", "-c", "tty; stty size; echo $TERM; exit 4"}, Rows: 24, Cols: 80}, nil, &out, nil)
	if err != nil || r.ExitCode != 4 {
		t.Fatalf("exec = %+v, %v", r, err)
	}
	for _, want := range []string{"/dev/pts/", "24 80", "xterm-256color"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("tty output %q lacks %q", out.String(), want)
		}
	}

	// A resize reaches the process as SIGWINCH and a new size.
	resize := make(chan proto.Winsize, 1)
	w := &watchWriter{want: "ready", seen: make(chan struct{})}
	go func() {
		<-w.seen
		resize <- proto.Winsize{Rows: 40, Cols: 120}
	}()
	r, err = c.ExecTTY(ctx, proto.ExecParams{Args: []string{"sh", "-c", `trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done`}, Rows: 24, Cols: 80}, nil, w, resize)
	if err != nil || r.ExitCode != 0 || !strings.Contains(w.String(), "40 120") {
		t.Fatalf("resized exec = %+v, %v, %q", r, err, w.String())
	}
}

// watchWriter closes seen once want was written.
type watchWriter struct {
	bytes.Buffer
	want string
	seen chan struct{}
	once bool
}

func (w *watchWriter) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if !w.once && strings.Contains(w.String(), w.want) {
		w.once = true
		close(w.seen)
	}
	return n, err
}

// TestDialStatsPorts: Dial reaches a real TCP server on the agent's side
// and carries bytes both ways; a refused dial surfaces on Read; stats and
// ports come back as the server gave them.
func TestDialStatsPorts(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	c := pair(t, &server.Server{
		Stats: func() (proto.StatsResult, error) { return proto.StatsResult{NumCPU: 3, Procs: 7}, nil },
		Ports: func() ([]proto.Socket, error) { return []proto.Socket{{Proto: "tcp", Addr: "0.0.0.0", Port: 80}}, nil },
	})
	ctx := context.Background()
	conn, err := c.Dial(ctx, echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Fatalf("echo through Dial = %q, %v", line, err)
	}
	conn.Close()

	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := dead.Addr().String()
	dead.Close()
	conn, err = c.Dial(ctx, addr)
	if err == nil {
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dialing a closed port: %v", err)
	}

	st, err := c.Stats(ctx)
	if err != nil || st.NumCPU != 3 || st.Procs != 7 {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
	socks, err := c.Ports(ctx)
	if err != nil || len(socks) != 1 || socks[0].Port != 80 {
		t.Fatalf("Ports = %+v, %v", socks, err)
	}
	bare := pair(t, &server.Server{})
	if _, err := bare.Stats(ctx); err == nil {
		t.Fatal("an agent without stats answered")
	}
}

func tarOf(t *testing.T, files map[string]string, extra ...*tar.Header) ([]byte, map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	sums := map[string]string{}
	for _, name := range []string{"a.txt", "dir/b.sh", "dir/sub/c"} {
		body, ok := files[name]
		if !ok {
			continue
		}
		mode := int64(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		sum := sha256.Sum256([]byte(body))
		sums[name] = hex.EncodeToString(sum[:])
		want := sums[name]
		if bad, ok := files["!"+name]; ok { // the sender's claim, for a damaged transfer
			want = bad
		}
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: tar.TypeReg,
			PAXRecords: map[string]string{proto.PAXSHA256: want}, Format: tar.FormatPAX})
		_, _ = tw.Write([]byte(body))
	}
	for _, h := range extra {
		_ = tw.WriteHeader(h)
	}
	tw.Close()
	return buf.Bytes(), sums
}

func TestTreeRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ws")
	c := pair(t, &server.Server{})
	ctx := context.Background()
	files := map[string]string{"a.txt": "alpha\n", "dir/b.sh": "#!/bin/sh\necho hi\n", "dir/sub/c": "c"}
	data, sums := tarOf(t, files, &tar.Header{Name: "link", Linkname: "a.txt", Typeflag: tar.TypeSymlink})
	r, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir, UID: os.Getuid(), GID: os.Getgid(), Entries: 4}, bytes.NewReader(data))
	if err != nil || r.Files != 3 {
		t.Fatalf("PutTree = %+v, %v", r, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "dir/b.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("b.sh: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "link")); err != nil || l != "a.txt" {
		t.Fatalf("link: %q %v", l, err)
	}
	m, err := c.Manifest(ctx, proto.ManifestParams{Dir: dir}, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range m {
		got[e.Path] = e.Type + " " + e.SHA256 + e.Link
	}
	if got["a.txt"] != "f "+sums["a.txt"] || got["link"] != "l a.txt" || got["dir/sub"] != "d " {
		t.Fatalf("manifest = %v", got)
	}
	var out bytes.Buffer
	if _, err := c.GetTree(ctx, dir, []string{"a.txt", "dir/b.sh", "link"}, &out); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&out)
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if strings.Join(names, ",") != "a.txt,dir/b.sh,link" {
		t.Fatalf("GetTree entries = %v", names)
	}

	// A damaged file, a path out of the tree, a stream cut short: each
	// fails and changes nothing.
	before, _ := os.ReadFile(filepath.Join(dir, "a.txt"))
	bad, _ := tarOf(t, map[string]string{"a.txt": "changed", "!a.txt": sums["a.txt"]})
	if _, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir, Entries: 1}, bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a damaged file: %v", err)
	}
	// The same, claimed in WriteTree's closing global header.
	var claimedBad bytes.Buffer
	if _, err := tree.Write(&claimedBad, tree.Spec{Dir: dir, Paths: []string{"a.txt"}, Hashes: map[string]string{"a.txt": strings.Repeat("0", 64)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir + "2", Entries: 1}, &claimedBad); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a file whose closing hash is wrong: %v", err)
	}
	escape, _ := tarOf(t, nil, &tar.Header{Name: "../evil", Typeflag: tar.TypeReg})
	if _, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir}, bytes.NewReader(escape)); err == nil {
		t.Fatal("a path out of the tree was taken")
	}
	short, _ := tarOf(t, map[string]string{"a.txt": "changed"})
	if _, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir, Entries: 2}, bytes.NewReader(short)); err == nil || !strings.Contains(err.Error(), "cut off") {
		t.Fatalf("a cut tree: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "a.txt")); !bytes.Equal(before, after) {
		t.Fatalf("a failed put changed a.txt to %q", after)
	}
	if stale, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".banger-stage-*")); len(stale) != 0 {
		t.Fatalf("staging left: %v", stale)
	}
	// A PAXDelete header removes, after the new entries land.
	hdr, err := tree.DeleteHeader([]string{"dir/sub/c"})
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := tarOf(t, nil)
	if _, err := c.PutTree(ctx, proto.PutTreeParams{Dir: dir}, bytes.NewReader(append(hdr, empty...))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dir/sub/c")); !os.IsNotExist(err) {
		t.Fatalf("deleted file: %v", err)
	}
	if _, err := tree.DeleteHeader([]string{"../etc/passwd"}); err == nil {
		t.Fatal("a delete out of the tree was taken")
	}
}

// TestSSHOverAgentChannel runs an SSH session through the agent link
// itself, as `banger vm ssh` does for a VM without a network.
func TestSSHOverAgentChannel(t *testing.T) {
	user, err := sshkey.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	hk, err := sshkey.LoadOrCreate(filepath.Join(t.TempDir(), "hk"))
	if err != nil {
		t.Fatal(err)
	}
	srv := sshd.New(sshd.Config{HostKey: hk, Authorized: []ssh.PublicKey{user.PublicKey()}})
	a, b := net.Pipe()
	go (&server.Server{SSH: srv.ServeConn}).Serve(b)
	c := client.New(a)
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Two connections at once, each its own stream on the one link.
	for i := range 2 {
		conn, err := c.DialSSH(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Connect as ourselves by uid, which needs no privileges.
		sc, chans, reqs, err := ssh.NewClientConn(conn, "agent", &ssh.ClientConfig{
			User: strconv.Itoa(os.Getuid()), Auth: []ssh.AuthMethod{ssh.PublicKeys(user)}, HostKeyCallback: ssh.FixedHostKey(hk.PublicKey()),
		})
		if err != nil {
			t.Fatal(err)
		}
		client := ssh.NewClient(sc, chans, reqs)
		defer client.Close()
		s, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.Output("echo session " + strconv.Itoa(i))
		if err != nil || string(out) != "session "+strconv.Itoa(i)+"\n" {
			t.Fatalf("over the agent channel: %q, %v", out, err)
		}
	}
	// The link still serves calls.
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestAbandonedExecIsKilled: a caller that gives up on a command (its
// context ends: a timeout, a client gone) leaves nothing running in the
// guest, the command's children included.
func TestAbandonedExecIsKilled(t *testing.T) {
	for _, tty := range []bool{false, true} {
		c := pair(t, &server.Server{})
		pidFile := filepath.Join(t.TempDir(), "pids")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			p := proto.ExecParams{Args: []string{"sh", "-c", "sleep 300 & echo $$ $! > " + pidFile + "; wait"}, Rows: 24, Cols: 80}
			var err error
			if tty {
				_, err = c.ExecTTY(ctx, p, nil, io.Discard, nil)
			} else {
				_, err = c.Exec(ctx, p, nil, nil, nil)
			}
			done <- err
		}()
		var pids []int
		deadline := time.Now().Add(30 * time.Second)
		for len(pids) < 2 && time.Now().Before(deadline) {
			data, _ := os.ReadFile(pidFile)
			pids = pids[:0]
			for _, f := range strings.Fields(string(data)) {
				if n, err := strconv.Atoi(f); err == nil {
					pids = append(pids, n)
				}
			}
			time.Sleep(20 * time.Millisecond) // polling a file the command writes
		}
		if len(pids) < 2 {
			t.Fatalf("tty %v: the command never wrote its pids", tty)
		}
		cancel()
		if err := <-done; err == nil {
			t.Fatalf("tty %v: an abandoned exec returned no error", tty)
		}
		for _, pid := range pids {
			gone := false
			for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				// A zombie of ours still answers kill 0: read its state.
				stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
				if err != nil || strings.Contains(string(stat), ") Z ") {
					gone = true
					break
				}
			}
			if !gone {
				t.Fatalf("tty %v: process %d still runs after its caller gave up", tty, pid)
			}
		}
	}
}

// TestSignal: a running exec named by its handle gets the signal asked
// (its trap runs), the handle is free once it ended; a signal out of
// range, an unknown handle and a handle in use are refused.
func TestSignal(t *testing.T) {
	c := pair(t, &server.Server{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := &watchWriter{want: "ready", seen: make(chan struct{})}
	type ended struct {
		r   proto.ExecResult
		err error
	}
	done := make(chan ended, 1)
	go func() {
		r, err := c.Exec(ctx, proto.ExecParams{Args: []string{"sh", "-c", `trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done`}, Handle: "h1"}, nil, w, io.Discard)
		done <- ended{r, err}
	}()
	<-w.seen
	if _, err := c.Exec(ctx, proto.ExecParams{Args: []string{"true"}, Handle: "h1"}, nil, io.Discard, io.Discard); err == nil {
		t.Error("a second exec took a handle in use")
	}
	for _, bad := range []struct {
		handle string
		sig    int
	}{{"h1", 0}, {"h1", 64}, {"nope", 15}} {
		if err := c.Signal(ctx, bad.handle, bad.sig); err == nil {
			t.Errorf("signal %d to %q: no error", bad.sig, bad.handle)
		}
	}
	if err := c.Signal(ctx, "h1", 15); err != nil {
		t.Fatal(err)
	}
	e := <-done
	if e.err != nil || e.r.ExitCode != 7 || !strings.Contains(w.String(), "got TERM") {
		t.Fatalf("after SIGTERM: %+v, %v, %q", e.r, e.err, w.String())
	}
	if err := c.Signal(ctx, "h1", 15); err == nil {
		t.Error("a signal to an exec that ended: no error")
	}
}
