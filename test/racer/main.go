// Command racer plays a user racing root in a directory that user
// controls, for the tests that prove root never works there by path
// (roottest.StartRacer runs it as that user). Watching the directory
// (and every directory below it) with inotify, at every event and every
// few milliseconds besides, it:
//
//   - with -names, puts a symlink to -target at each name (whatever root
//     made there is moved aside first), so a step root takes by one of
//     those names lands on the target; with -replace too, only where root
//     made something, so that root's next step on it (a chown, a chmod,
//     a rename) meets the symlink;
//   - with -swap, replaces every directory below -dir that is this
//     user's by a symlink to -target, so a step root takes by a path
//     through one lands there (a directory root is giving away becomes
//     this user's as root starts on it: root is inside it then).
//
// It reads commands on its standard input, a line each, answering each
// on its standard output once it took effect: "pause" (it plants nothing
// until "resume"; answered "paused"), "resume" ("resumed"). When its
// input closes it prints "planted N" (how many links it planted) and
// exits.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	dir := flag.String("dir", "", "the directory to race in")
	names := flag.String("names", "", "comma-separated names to plant symlinks at")
	target := flag.String("target", "", "where every symlink points")
	swap := flag.Bool("swap", false, "replace directories below -dir by symlinks")
	replace := flag.Bool("replace", false, "with -names: plant only where something was made")
	flag.Parse()
	if *dir == "" || *target == "" {
		fmt.Fprintln(os.Stderr, "racer: -dir and -target are needed")
		os.Exit(2)
	}
	var stop, paused atomic.Bool
	cmds := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
		stop.Store(true)
		close(cmds)
	}()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, "racer:", err)
		os.Exit(1)
	}
	const mask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_ATTRIB | unix.IN_DELETE | unix.IN_CLOSE_WRITE | unix.IN_OPEN
	watched := map[string]bool{}
	// The parent tells of a change to -dir itself (root giving it away)
	// before -dir may be watched.
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(*dir), mask); err != nil {
		fmt.Fprintln(os.Stderr, "racer: watching -dir's parent:", err)
	}
	watch := func() {
		_ = filepath.WalkDir(*dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && !watched[p] {
				if _, err := unix.InotifyAddWatch(fd, p, mask); err == nil {
					watched[p] = true
				}
			}
			return nil
		})
	}
	planted, n := 0, 0
	aside := func(p string) string {
		n++
		return filepath.Join(filepath.Dir(p), ".racer-"+strconv.Itoa(os.Getpid())+"-"+strconv.Itoa(n))
	}
	race := func() {
		if *names != "" {
			for _, name := range strings.Split(*names, ",") {
				p := filepath.Join(*dir, name)
				fi, err := os.Lstat(p)
				switch {
				case err == nil && fi.Mode()&os.ModeSymlink != 0:
				case err == nil: // what root made, exchanged for the link in one step
					a := aside(p)
					if os.Symlink(*target, a) == nil {
						if unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, p, unix.RENAME_EXCHANGE) == nil {
							planted++
						} else {
							os.Remove(a)
						}
					}
				case !*replace:
					if os.Symlink(*target, p) == nil {
						planted++
					}
				}
			}
		}
		if *swap {
			// Shallowest first: a directory swapped takes everything
			// below it; one that cannot be (not ours yet) is looked into.
			queue := []string{*dir}
			for len(queue) > 0 {
				d := queue[0]
				queue = queue[1:]
				entries, err := os.ReadDir(d)
				if err != nil {
					continue
				}
				for _, e := range entries {
					p := filepath.Join(d, e.Name())
					if !e.IsDir() {
						continue
					}
					fi, err := e.Info()
					if err != nil {
						continue
					}
					if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == os.Getuid() {
						// Exchanged in one step: root never finds the
						// name missing in between.
						a := aside(p)
						if os.Symlink(*target, a) == nil {
							if unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, p, unix.RENAME_EXCHANGE) == nil {
								planted++
								// The directory, now aside, may still be
								// walked by root: its own go too.
								queue = append(queue, a)
								continue
							}
							os.Remove(a)
						}
					}
					queue = append(queue, p)
				}
			}
		}
	}
	buf := make([]byte, 64<<10)
	for !stop.Load() {
		select {
		case c, ok := <-cmds:
			switch {
			case !ok:
			case c == "pause":
				paused.Store(true)
				fmt.Println("paused")
			case c == "resume":
				paused.Store(false)
				fmt.Println("resumed")
			}
		default:
		}
		if paused.Load() {
			time.Sleep(time.Millisecond)
			continue
		}
		race()
		watch()
		// Wait for an event, at most a few milliseconds.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if k, _ := unix.Poll(pfd, 3); k > 0 {
			for {
				if _, err := unix.Read(fd, buf); err != nil {
					break
				}
			}
		}
	}
	fmt.Println("planted", planted)
}
