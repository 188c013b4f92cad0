// Package spawn starts processes in the guest as an image's user: the
// command resolved against the image (binary, account, environment,
// directory), then run with pipes or on a new terminal. The agent's
// server (exec) and its SSH server (sessions) share it. Guest side only.
package spawn

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/agent/passwd"
	"github.com/bangerdev/banger/internal/agent/proto"
)

// DefaultPath is the PATH of a process whose caller set none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Command is an exec request resolved against the guest: the binary
// found, the user's identity, the environment and directory filled in.
type Command struct {
	Path string
	Args []string
	Env  []string
	Dir  string
	Sys  *syscall.SysProcAttr
}

// Prepare resolves p against the file system under root ("/" in the
// guest). The process gets its own session and, with p.Tty, its stdin as
// controlling terminal.
func Prepare(root string, p proto.ExecParams) (Command, error) {
	if len(p.Args) == 0 {
		return Command{}, fmt.Errorf("no command")
	}
	acct, err := passwd.Lookup(root, p.User)
	if err != nil {
		return Command{}, err
	}
	env := withDefaults(p.Env, acct, p.Tty)
	path := p.Args[0]
	if !strings.Contains(path, "/") {
		if path, err = lookPath(root, path, env); err != nil {
			return Command{}, err
		}
	}
	dir := p.Dir
	if dir == "" {
		dir = acct.Home
		if fi, err := os.Stat(filepath.Join(root, dir)); err != nil || !fi.IsDir() {
			dir = "/"
		}
	}
	sys := &syscall.SysProcAttr{Setsid: true, Setctty: p.Tty, Ctty: 0}
	// Switching to who we already are would need privileges to set the
	// groups, for nothing.
	if p.User != "" && (int(acct.UID) != os.Getuid() || int(acct.GID) != os.Getgid()) {
		sys.Credential = &syscall.Credential{Uid: acct.UID, Gid: acct.GID, Groups: acct.Groups}
	}
	return Command{Path: path, Args: p.Args, Env: env, Dir: dir, Sys: sys}, nil
}

// withDefaults adds what a login would set and the caller did not.
func withDefaults(env []string, acct passwd.Account, tty bool) []string {
	have := map[string]bool{}
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		have[k] = true
	}
	out := append([]string(nil), env...)
	add := func(k, v string) {
		if !have[k] {
			out = append(out, k+"="+v)
		}
	}
	add("PATH", DefaultPath)
	add("HOME", acct.Home)
	add("USER", acct.Name)
	add("LOGNAME", acct.Name)
	if tty {
		add("TERM", "xterm-256color")
	}
	return out
}

// lookPath finds name in env's PATH under root.
func lookPath(root, name string, env []string) (string, error) {
	path := DefaultPath
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(filepath.Join(root, p)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH %s", name, path)
}
