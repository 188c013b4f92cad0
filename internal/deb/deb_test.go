package deb

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestDataReadsWhatDpkgDebWrote(t *testing.T) {
	// dpkg-deb (always on Debian) writes a real package: xz-compressed data.
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755)
	os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte("Package: t\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: t\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	os.WriteFile(filepath.Join(root, "boot", "vmlinuz-1"), []byte("kernel"), 0o644)
	pkg := filepath.Join(t.TempDir(), "t.deb")
	for _, comp := range []string{"xz", "gzip", "zstd", "none"} {
		out, err := exec.Command("dpkg-deb", "-Z"+comp, "--root-owner-group", "--build", root, pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg-deb -Z%s: %v\n%s", comp, err, out)
		}
		f, err := os.Open(pkg)
		if err != nil {
			t.Fatal(err)
		}
		tr, done, err := Data(f)
		if err != nil {
			t.Fatalf("%s: %v", comp, err)
		}
		found := false
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", comp, err)
			}
			if h.Name == "./boot/vmlinuz-1" {
				b, _ := io.ReadAll(tr)
				found = string(b) == "kernel"
			}
		}
		done()
		f.Close()
		if !found {
			t.Fatalf("%s: ./boot/vmlinuz-1 not found or wrong", comp)
		}
	}
}

func TestBuildAndJunk(t *testing.T) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "./x", Size: 1, Mode: 0o644})
	tw.Write([]byte("y"))
	tw.Close()
	tr, done, err := Data(bytes.NewReader(Build(tb.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if h, err := tr.Next(); err != nil || h.Name != "./x" {
		t.Fatalf("Next = %v, %v", h, err)
	}
	for _, junk := range [][]byte{nil, []byte("!<arch>\n"), []byte("PK\x03\x04 a zip")} {
		if _, _, err := Data(bytes.NewReader(junk)); !errors.Is(err, ErrNotDeb) {
			t.Errorf("Data(%q) = %v", junk, err)
		}
	}
}

func FuzzData(f *testing.F) {
	f.Add(Build(nil))
	f.Add([]byte("!<arch>\ndata.tar.xz/    0           0     0     100644  5         `\nhello"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, done, err := Data(bytes.NewReader(data))
		if err != nil {
			return
		}
		defer done()
		for i := 0; i < 100; i++ {
			if _, err := tr.Next(); err != nil {
				return
			}
		}
	})
}
