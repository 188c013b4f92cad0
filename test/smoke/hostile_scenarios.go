package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// vmHostileGuest: root in a real guest attacks the host through what
// banger takes from it. It plants nested .git directories (a config
// whose fsmonitor would run on the host, a hook), writes a 0777 and a
// setuid file, a sparse file past the cap, swaps a directory for a symlink out
// of the tree between two pulls, and floods its console. The host's
// repository and everything beside it stay intact, every refusal says
// why, and the daemon keeps serving.
func vmHostileGuest(t *T) {
	// Small caps, so the guest's own hashing of a "huge" file stays short
	// under emulation.
	cfg := "log_max_size = \"256K\"\n[workspace]\nmax_bytes = \"16M\"\n"
	if err := os.WriteFile(filepath.Join(t.Home(), "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	ref := t.debianRef()
	proj := filepath.Join(t.home, "proj")
	t.writeFile(proj, "docs/readme.md", []byte("# docs\n"), 0o644)
	t.writeFile(proj, "main.go", []byte("package main\n"), 0o644)
	t.gitRun(proj, "git", "init", "-q", "-b", "main")
	t.gitRun(proj, "git", "add", "-A")
	t.gitRun(proj, "git", "commit", "-qm", "start")
	outside := filepath.Join(t.home, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	marker := filepath.Join(t.home, "PWNED")
	t.Must("vm", "run", proj, "--name", "evil", "--image", ref, "--memory", "512M", "-d")
	in := func(script string) string {
		return t.Must("vm", "exec", "evil", "--", "sh", "-c", script).stdout
	}
	// What of the host's repository could run code: its config and hooks
	// (git status rewrites the index: left out).
	gitState := func() string {
		return treeSums(t, filepath.Join(proj, ".git", "hooks")) + t.gitRun(proj, "cat", ".git/config") + t.gitRun(proj, "git", "rev-parse", "HEAD")
	}
	gitBefore := gitState()

	// Nested repositories, a hook, modes no host file should get.
	in("mkdir -p docs/.git vendor/lib/.GIT/hooks && printf '[core]\\n\\tfsmonitor = touch " + marker + "\\n' > docs/.git/config" +
		" && echo 'ref: refs/heads/main' > docs/.git/HEAD" +
		" && printf '#!/bin/sh\\ntouch " + marker + "\\n' > vendor/lib/.GIT/hooks/post-checkout && chmod 755 vendor/lib/.GIT/hooks/post-checkout" +
		" && echo '#!/bin/sh' > run.sh && chmod 0777 run.sh && echo x > tool && chmod 04777 tool && echo new > docs/new.md")
	t.Must("vm", "workspace", "pull", "evil")
	for _, p := range []string{"docs/.git", "vendor"} {
		if _, err := os.Lstat(filepath.Join(proj, p)); !os.IsNotExist(err) {
			t.Fatalf("%s came to the host (%v)", p, err)
		}
	}
	t.gitRun(filepath.Join(proj, "docs"), "git", "status", "--porcelain")
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("git on the host ran what the guest planted")
	}
	for p, want := range map[string]os.FileMode{"run.sh": 0o755, "tool": 0o755, "docs/new.md": 0o644} {
		fi, err := os.Stat(filepath.Join(proj, p))
		if err != nil || fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid) != want {
			t.Fatalf("%s came as %v (%v); want %v", p, fi.Mode(), err, want)
		}
	}
	if gitState() != gitBefore {
		t.Fatalf("the host repository changed")
	}

	// A sparse file over the cap (200 MB of holes): refused before
	// anything is written.
	in("truncate -s 200M huge.img")
	before := treeSums(t, proj)
	r := t.MustFail(1, "workspace.max_bytes", "vm", "workspace", "pull", "evil")
	t.Contains("the refusal says what to do", r.stderr, "huge.img", "raise it in the config")
	if treeSums(t, proj) != before {
		t.Fatalf("a refused pull changed the host")
	}
	in("rm huge.img")

	// docs swapped for a symlink out of the tree between two pulls:
	// refused as a conflict, --force too; nothing written through it.
	in("rm -rf docs && ln -s / docs")
	before = treeSums(t, proj)
	t.MustFail(1, "docs", "vm", "workspace", "pull", "evil")
	t.MustFail(1, "docs", "vm", "workspace", "pull", "--force", "evil")
	if treeSums(t, proj) != before {
		t.Fatalf("the refused pull changed the host")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("written outside the tree: %v", entries)
	}

	// A console flood: the host keeps at most the cap; the daemon and
	// the VM still answer.
	var v struct {
		ID string `json:"id"`
	}
	t.JSON(&v, "vm", "show", "evil")
	console := filepath.Join(t.home, "run", "vms", v.ID, "console.log")
	start := time.Now()
	in("head -c 3000000 /dev/zero | tr '\\0' 'x' | fold -w 99 > /dev/console; echo flood-done > /dev/console")
	var worst int64
	t.Eventually("the flood's end reaches the console", time.Minute, func() bool {
		var on int64
		for _, p := range []string{console, console + ".1"} {
			if fi, err := os.Stat(p); err == nil {
				on += fi.Size()
			}
		}
		worst = max(worst, on)
		return strings.Contains(t.Must("vm", "logs", "-n", "3", "evil").stdout, "flood-done")
	})
	if worst > 256<<10+128<<10 {
		t.Fatalf("%d bytes of console on the host for a cap of 256 KiB", worst)
	}
	fmt.Fprintf(os.Stderr, "vm-hostile-guest: a console flood of 3 MB in %s; at most %d bytes of it on the host\n", time.Since(start).Round(time.Millisecond), worst)
	t.Contains("the VM still answers", in("echo alive"), "alive")
	t.Must("vm", "delete", "--force", "evil")
	if gitState() != gitBefore {
		t.Fatalf("the host repository changed")
	}
}
