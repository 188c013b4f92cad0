package workspace

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/agent/tree"
)

// Selection is the host files a workspace holds.
type Selection struct {
	Root  string
	Files []string // slash-separated, relative to Root, sorted: regular files and symlinks
	Git   bool     // Root is the top of a git work tree: its .git goes too
	Base  string   // HEAD when the selection was made ("" without commits)
}

// Select lists the files of the tree at root: in a git work tree the
// tracked ones (and with untracked the untracked ones git does not
// ignore), elsewhere every file but those of nested .git directories. A
// tree inside a repository git cannot read is refused, never taken whole:
// that would send ignored secrets and, on the first pull, lose the
// host's history.
func Select(ctx context.Context, root string, untracked bool) (Selection, error) {
	sel := Selection{Root: root}
	fi, err := os.Stat(root)
	if err != nil {
		return sel, fmt.Errorf("workspace %s: %w", root, err)
	}
	if !fi.IsDir() {
		return sel, fmt.Errorf("workspace %s: not a directory", root)
	}
	top, err := repoTop(root)
	if err != nil {
		return sel, err
	}
	if top == "" {
		return sel, selectAll(&sel)
	}
	g := hostGit{top: top}
	if err := g.trusted(); err != nil {
		return sel, err
	}
	args := []string{"ls-files", "-z", "--cached"}
	if untracked {
		args = append(args, "--others", "--exclude-standard")
	}
	out, err := g.run(ctx, root, nil, args...)
	if err != nil {
		return sel, fmt.Errorf("workspace %s is in the git repository %s, which git cannot read: %w; fix the repository or pick a directory outside it", root, top, err)
	}
	for _, f := range strings.Split(out, "\x00") {
		if f == "" || slices.Contains(sel.Files, f) || tree.IsGitPath(f) {
			continue
		}
		// ls-files --cached names tracked files deleted from the work
		// tree, and submodules: neither is a file to send.
		st, err := os.Lstat(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil || (!st.Mode().IsRegular() && st.Mode()&fs.ModeSymlink == 0) {
			continue
		}
		sel.Files = append(sel.Files, f)
	}
	slices.Sort(sel.Files)
	realRoot, _ := filepath.EvalSymlinks(root)
	sel.Git = top == realRoot || top == root
	if head, err := g.run(ctx, root, nil, "rev-parse", "--verify", "-q", "HEAD"); err == nil {
		sel.Base = strings.TrimSpace(head)
	}
	return sel, nil
}

// repoTop finds the work tree root holds, as git's discovery would (the
// nearest directory upward with a .git), without running git: "" when
// there is none.
func repoTop(root string) (string, error) {
	dir, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("workspace %s: %w", root, err)
	}
	for {
		if _, err := os.Lstat(filepath.Join(dir, ".git")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", nil
		}
		dir = parent
	}
}

// selectAll takes every file under a tree that is not a git work tree.
func selectAll(sel *Selection) error {
	return filepath.WalkDir(sel.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.EqualFold(d.Name(), ".git") {
			return fs.SkipDir
		}
		if d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0 {
			rel, _ := filepath.Rel(sel.Root, p)
			if rel = filepath.ToSlash(rel); !tree.IsGitPath(rel) {
				sel.Files = append(sel.Files, rel)
			}
		}
		return nil
	})
}

// hostGit runs git on the host against the repository whose work tree
// is top, so that nothing in the repository, the environment or a tree
// a guest wrote chooses a program to run: no system or global config, no
// fsmonitor, no hooks, no external diff or textconv, no pager, no
// prompts, and safe.directory scoped to top alone (a root daemon reads a
// user's repository without trusting every repository on the machine).
type hostGit struct{ top string }

// gitOverrides are passed as -c to every host git: command-line config
// outranks the repository's own.
func gitOverrides() []string {
	return []string{
		"core.fsmonitor=false",
		"core.hooksPath=/dev/null",
		"core.untrackedCache=false",
		"core.attributesFile=/dev/null",
		"core.pager=cat",
		"core.askPass=",
		"credential.helper=",
		"diff.external=",
		"protocol.allow=never",
	}
}

// env is a fresh environment (none of the daemon's GIT_ variables),
// with extra added.
func (g hostGit) env(extra []string) []string {
	env := []string{
		"PATH=" + cmp.Or(os.Getenv("PATH"), "/usr/local/bin:/usr/bin:/bin"),
		"HOME=/nonexistent",
		"LC_ALL=C",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_ATTR_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_PAGER=cat",
		"GIT_OPTIONAL_LOCKS=0",
		"GIT_NO_REPLACE_OBJECTS=1",
		"GIT_DISCOVERY_ACROSS_FILESYSTEM=1",
	}
	return append(env, extra...)
}

// run runs git in dir with extra environment and returns its stdout.
func (g hostGit) run(ctx context.Context, dir string, extra []string, args ...string) (string, error) {
	return g.input(ctx, dir, extra, "", args...)
}

// input is run with stdin.
func (g hostGit) input(ctx context.Context, dir string, extra []string, stdin string, args ...string) (string, error) {
	full := []string{"-c", "safe.directory=" + g.top}
	for _, o := range gitOverrides() {
		full = append(full, "-c", o)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, "git", full...)
	cmd.Dir, cmd.Env, cmd.Stdin = dir, g.env(extra), strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return "", fmt.Errorf("git %s: %s", strings.Join(args, " "), strings.TrimSpace(stderr.String()))
		}
		return "", fmt.Errorf("running git (install it: apt-get install git): %w", err)
	}
	return stdout.String(), nil
}

// trusted refuses a repository whose git directory or config belongs to
// someone other than the work tree's owner: its config would choose
// what the daemon's git does with that owner's files.
func (g hostGit) trusted() error {
	owner := func(p string) (uint32, bool) {
		fi, err := os.Lstat(p)
		if err != nil {
			return 0, false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		return st.Uid, ok
	}
	want, ok := owner(g.top)
	if !ok {
		return nil
	}
	for _, p := range []string{filepath.Join(g.top, ".git"), filepath.Join(g.top, ".git", "config")} {
		if uid, ok := owner(p); ok && uid != want {
			return fmt.Errorf("%s is owned by uid %d, not by the work tree's owner (uid %d): banger will not run git with it; fix its owner (chown) or use a tree you own", p, uid, want)
		}
	}
	return nil
}
