package cpio

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func TestArchiveReadsBackWithGNUcpio(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("dev", 0o755))
	must(w.CharDev("dev/console", 0o600, 5, 1))
	must(w.Dir("lib/modules", 0o755))
	must(w.File("init", 0o755, []byte("#!/bin/agent\n")))
	must(w.File("lib/modules/a.ko", 0o644, []byte("abc")))
	must(w.Symlink("sbin", "bin"))
	must(w.Close())
	if buf.Len()%4 != 0 {
		t.Fatalf("archive length %d is not 4-aligned", buf.Len())
	}
	cmd := exec.Command("cpio", "-t", "-v", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	listing := string(out)
	for _, want := range []string{"drwxr-xr-x", "crw-------", "dev/console", "-rwxr-xr-x", " init", "lib/modules/a.ko", "sbin -> bin"} {
		if !strings.Contains(listing, want) {
			t.Errorf("listing lacks %q:\n%s", want, listing)
		}
	}
	if err := NewWriter(&buf).File("", 0, nil); err == nil {
		t.Error("an empty name was accepted")
	}
}
