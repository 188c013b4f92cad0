package vm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/api"
)

// TestFiles: a VM's files through its agent (the fake guest's agent is
// the real one, on this host's file system): write, read a part, list,
// search, move, remove; bad requests refused before the guest is asked.
func TestFiles(t *testing.T) {
	f := newFixture(t)
	f.mustCreate("box")
	files := f.svc.Files()
	ctx := context.Background()
	dir := t.TempDir()
	w, err := files.Write(ctx, api.VMFileWriteParams{Name: "box", Path: dir + "/src/app.py", Data: []byte("print('hi')\n# TODO fix\n"), Parents: true})
	if err != nil || w.Size != 23 {
		t.Fatalf("write = %+v, %v", w, err)
	}
	r, err := files.Read(ctx, api.VMFileReadParams{Name: "box", Path: dir + "/src/app.py", Offset: 6, Limit: 4})
	if err != nil || string(r.Data) != "'hi'" || r.Size != 23 || r.EOF {
		t.Fatalf("read = %+v, %v", r, err)
	}
	if r, _ = files.Read(ctx, api.VMFileReadParams{Name: "box", Path: dir + "/src/app.py", Offset: 12}); !r.EOF || string(r.Data) != "# TODO fix\n" {
		t.Fatalf("read to the end = %+v", r)
	}
	l, err := files.FS(ctx, api.VMFSParams{Name: "box", Op: api.FSList, Path: dir, Depth: 2})
	if err != nil || len(l.Entries) != 2 || l.Entries[0].Type != "dir" || l.Entries[1].Path != dir+"/src/app.py" || l.Entries[1].Type != "file" {
		t.Fatalf("list = %+v, %v", l, err)
	}
	m, err := files.FS(ctx, api.VMFSParams{Name: "box", Op: api.FSSearch, Path: dir, Pattern: `TODO`})
	if err != nil || len(m.Matches) != 1 || m.Matches[0].Line != 2 {
		t.Fatalf("search = %+v, %v", m, err)
	}
	if _, err := files.FS(ctx, api.VMFSParams{Name: "box", Op: api.FSMove, Path: dir + "/src", To: dir + "/lib"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "lib", "app.py")); err != nil {
		t.Fatalf("move: %v", err)
	}
	if _, err := files.FS(ctx, api.VMFSParams{Name: "box", Op: api.FSRemove, Path: dir + "/lib", Recursive: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := files.Read(ctx, api.VMFileReadParams{Name: "box", Path: dir + "/lib/app.py"}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("reading a removed file = %v", err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"relative", func() error {
			_, err := files.Read(ctx, api.VMFileReadParams{Name: "box", Path: "etc/passwd"})
			return err
		}()},
		{"too large a read", func() error {
			_, err := files.Read(ctx, api.VMFileReadParams{Name: "box", Path: "/etc/passwd", Limit: api.MaxFileRead + 1})
			return err
		}()},
		{"too large a write", func() error {
			_, err := files.Write(ctx, api.VMFileWriteParams{Name: "box", Path: "/tmp/x", Data: make([]byte, api.MaxFileWrite+1)})
			return err
		}()},
		{"an unknown op", func() error { _, err := files.FS(ctx, api.VMFSParams{Name: "box", Op: "chmod", Path: "/"}); return err }()},
		{"a search without a pattern", func() error {
			_, err := files.FS(ctx, api.VMFSParams{Name: "box", Op: api.FSSearch, Path: "/"})
			return err
		}()},
		{"a relative destination", func() error {
			_, err := files.FS(ctx, api.VMFSParams{Name: "box", Op: api.FSMove, Path: "/a", To: "b"})
			return err
		}()},
	} {
		if !errors.Is(tc.err, api.ErrInvalidArgument) {
			t.Errorf("%s: %v", tc.name, tc.err)
		}
	}
}

// TestExecStdin: a command reads the caller's stdin; too much is refused.
func TestExecStdin(t *testing.T) {
	f := newFixture(t)
	f.mustCreate("box")
	var out strings.Builder
	r, err := f.svc.Exec(context.Background(), api.VMExecParams{Name: "box", Args: []string{"sh", "-c", "tr a-z A-Z"}, Stdin: []byte("piped in\n")},
		func(e api.VMExecEvent) error { out.Write(e.Data); return nil })
	if err != nil || r.ExitCode != 0 || out.String() != "PIPED IN\n" {
		t.Fatalf("exec with stdin = %+v, %q, %v", r, out.String(), err)
	}
	if _, err := f.svc.Exec(context.Background(), api.VMExecParams{Name: "box", Args: []string{"cat"}, Stdin: make([]byte, api.MaxExecStdin+1)},
		func(api.VMExecEvent) error { return nil }); !errors.Is(err, api.ErrInvalidArgument) {
		t.Fatalf("too much stdin = %v", err)
	}
}
