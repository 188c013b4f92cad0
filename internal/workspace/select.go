package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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
// ignore), elsewhere every file.
func Select(ctx context.Context, root string, untracked bool) (Selection, error) {
	sel := Selection{Root: root}
	fi, err := os.Stat(root)
	if err != nil {
		return sel, fmt.Errorf("workspace %s: %w", root, err)
	}
	if !fi.IsDir() {
		return sel, fmt.Errorf("workspace %s: not a directory", root)
	}
	top, err := git(ctx, root, "rev-parse", "--show-toplevel")
	if err != nil {
		return sel, selectAll(&sel)
	}
	args := []string{"ls-files", "-z", "--cached"}
	if untracked {
		args = append(args, "--others", "--exclude-standard")
	}
	out, err := git(ctx, root, args...)
	if err != nil {
		return sel, err
	}
	for _, f := range strings.Split(out, "\x00") {
		if f == "" || slices.Contains(sel.Files, f) {
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
	sel.Git = strings.TrimSpace(top) == realRoot || strings.TrimSpace(top) == root
	if head, err := git(ctx, root, "rev-parse", "--verify", "-q", "HEAD"); err == nil {
		sel.Base = strings.TrimSpace(head)
	}
	return sel, nil
}

// selectAll takes every file under a tree that is not a git work tree.
func selectAll(sel *Selection) error {
	return filepath.WalkDir(sel.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0 {
			rel, _ := filepath.Rel(sel.Root, p)
			sel.Files = append(sel.Files, filepath.ToSlash(rel))
		}
		return nil
	})
}

// git runs git in dir and returns its stdout.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
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
