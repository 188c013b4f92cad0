package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"aead.dev/minisign"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/release"
)

// ownBinaries gives the scenario its own copy of the binaries, which it
// may change, and returns their directory.
func (t *T) ownBinaries() string {
	bin := filepath.Join(t.home, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	for _, name := range release.Binaries {
		b, err := os.ReadFile(filepath.Join(t.bin, name))
		if err != nil {
			t.Fatalf("%v", err)
		}
		if err := os.WriteFile(filepath.Join(bin, name), b, 0o755); err != nil {
			t.Fatalf("%v", err)
		}
	}
	t.bin = bin
	return bin
}

// updateRelease: banger updates itself from signed releases served over
// HTTP on the scenario's loopback. Refused while a vm create is in
// flight (named), for a tampered tarball and for another key's
// signature, the binaries untouched each time; then accepted, the VM
// started before it answering after it; a release whose doctor fails is
// rolled back by itself; --rollback goes back to where it started.
func updateRelease(t *T) {
	// The scenario's own copy of the binaries: the update replaces them.
	t.ownBinaries()
	var start struct{ Client api.BuildInfo }
	t.JSON(&start, "version")
	reg := t.bootable()
	ref := reg + "/smoke/busybox:update"
	t.Push(ref, t.busyboxImage())
	t.Must("image", "pull", ref)

	// Releases, signed with a key of the scenario's: 0.99.0 built with
	// that version, and 0.99.1 whose doctor fails.
	pub, key, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("%v", err)
	}
	pubFile := filepath.Join(t.home, "release.pub")
	writeKey(t, pubFile, pub)
	otherPub, _, _ := minisign.GenerateKey(rand.Reader)
	otherFile := filepath.Join(t.home, "other.pub")
	writeKey(t, otherFile, otherPub)
	good := filepath.Join(t.home, "rel-0.99.0")
	t.buildRelease(good, "0.99.0")
	www := filepath.Join(t.home, "www") // what the HTTP server serves
	src := filepath.Join(www, "releases")
	if err := release.Publish(good, src, "0.99.0", key, release.DefaultValidity); err != nil {
		t.Fatalf("%v", err)
	}
	broken := filepath.Join(t.home, "rel-0.99.1")
	if err := os.Mkdir(broken, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	script := func(name, body string) {
		if err := os.WriteFile(filepath.Join(broken, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatalf("%v", err)
		}
	}
	script("bangerd", `[ "$1" = --version ] && { echo "bangerd version 0.99.1"; exit 0; }; exec `+filepath.Join(good, "bangerd")+` "$@"`+"\n")
	script("banger", `[ "$1" = doctor ] && { echo '{"ok":false,"checks":[{"name":"kvm","status":"fail","detail":"broken on purpose"}]}'; exit 1; }; exec `+filepath.Join(good, "banger")+` "$@"`+"\n")
	script("banger-agent", "exit 1\n")
	if err := release.Publish(broken, src, "0.99.1", key, release.DefaultValidity); err != nil {
		t.Fatalf("%v", err)
	}
	tampered := filepath.Join(www, "tampered")
	if err := os.CopyFS(tampered, os.DirFS(src)); err != nil {
		t.Fatalf("%v", err)
	}
	tb := filepath.Join(tampered, release.TarballName("0.99.0"))
	b, _ := os.ReadFile(tb)
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(tb, b, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	// A mirror's tricks, each signed with the release key: the same
	// index signed an hour before the one published (served once the
	// newer was seen), and one that expired.
	sums, err := os.ReadFile(filepath.Join(src, release.SumsName))
	if err != nil {
		t.Fatalf("%v", err)
	}
	for _, m := range []struct {
		dir      string
		issued   time.Time
		validFor time.Duration
	}{{"stale", time.Now().Add(-time.Hour), release.DefaultValidity}, {"expired", time.Now().Add(-100 * 24 * time.Hour), 24 * time.Hour}} {
		dir := filepath.Join(www, m.dir)
		if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
			t.Fatalf("%v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, release.SigName), release.Sign(key, sums, m.issued, m.validFor), 0o644); err != nil {
			t.Fatalf("%v", err)
		}
	}
	ln := t.ListenInNetns("127.0.0.1:0")
	srv := &http.Server{Handler: http.FileServer(http.Dir(www)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.defer_(func() { srv.Close() })
	base := "http://" + ln.Addr().String()
	url, tamperedURL, staleURL, expiredURL := base+"/releases", base+"/tampered", base+"/stale", base+"/expired"
	upd := func(args ...string) []string {
		return append([]string{"update", "--pubkey-file", pubFile}, args...)
	}

	t.Contains("update --check", t.Must(upd("--check", "--from", url)...).stdout, "can be updated to 0.99.1")
	sum := t.binariesSum()
	// Refused while a create is in flight, naming it.
	create := exec.Command(filepath.Join(t.bin, "banger"), "vm", "create", "--name", "before", "--image", ref, "--cpus", "1", "--memory", "256M")
	create.Env = t.env()
	var createOut bytes.Buffer
	create.Stdout, create.Stderr = &createOut, &createOut
	if err := create.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	t.Eventually("the create is in flight", time.Minute, func() bool {
		var ops struct{ Operations []api.OperationSummary }
		t.JSON(&ops, "ops", "list")
		for _, op := range ops.Operations {
			if op.Kind == api.OpKindVMCreate && !op.Done {
				return true
			}
		}
		return false
	})
	t.MustFail(1, "vm.create before", upd("--from", url, "--to", "0.99.0")...)
	if err := create.Wait(); err != nil {
		t.Fatalf("vm create: %v: %s", err, createOut.String())
	}
	t.untouched(sum)
	// A tampered tarball, another key's signature: refused, untouched.
	t.MustFail(1, "checksum does not match", upd("--from", tamperedURL, "--to", "0.99.0")...)
	t.untouched(sum)
	t.MustFail(1, "signature does not verify", "update", "--pubkey-file", otherFile, "--from", url)
	t.untouched(sum)
	t.MustFail(1, "signature does not verify", "update", "--from", url) // banger's own key did not sign these
	t.untouched(sum)
	t.Contains("dry run", t.Must(upd("--from", url, "--to", "0.99.0", "--dry-run")...).stdout, "nothing was changed")
	t.untouched(sum)
	// An expired index; an index issued before the newest this host has
	// verified (--check above saw the newer): refused, untouched.
	t.MustFail(1, "release index expired", upd("--from", expiredURL, "--to", "0.99.0")...)
	t.untouched(sum)
	t.MustFail(1, "holding updates back", upd("--from", staleURL, "--to", "0.99.0")...)
	t.untouched(sum)

	// Accepted: the daemon restarts on 0.99.0 and adopts the VM.
	pid := t.DaemonPID()
	t.Contains("update", t.Must(upd("--from", url, "--to", "0.99.0")...).stdout, "to 0.99.0", "doctor passed")
	t.sameVersions("0.99.0")
	if t.DaemonPID() == pid {
		t.Fatalf("the daemon did not restart")
	}
	t.Contains("the VM started before", t.Must("vm", "exec", "before", "--", "echo", "still here").stdout, "still here")

	// A release older than the installed one: refused unless asked for.
	if err := release.Publish(good, src, "0.98.0", key, release.DefaultValidity); err != nil {
		t.Fatalf("%v", err)
	}
	t.MustFail(1, "--allow-downgrade", upd("--from", url, "--to", "0.98.0")...)
	// Allowed, it goes on to check the tarball (whose bangerd says 0.99.0).
	t.MustFail(1, "holds bangerd 0.99.0", upd("--from", url, "--to", "0.98.0", "--allow-downgrade", "--dry-run")...)
	t.sameVersions("0.99.0")

	// A release whose doctor fails is rolled back by itself.
	r := t.MustFail(1, "rolled back to 0.99.0", upd("--from", url)...)
	t.Contains("the rollback's reason", r.stderr, "doctor failed: kvm: broken on purpose")
	t.sameVersions("0.99.0")
	t.Contains("after the rollback", t.Must("vm", "exec", "before", "--", "echo", "still here").stdout, "still here")

	// --rollback: back to where it started.
	t.Contains("--rollback", t.Must("update", "--rollback").stdout, "to "+start.Client.Version)
	t.sameVersions(start.Client.Version)
	t.untouched(sum)
	t.Contains("after --rollback", t.Must("vm", "exec", "before", "--", "echo", "still here").stdout, "still here")
	t.Must("vm", "delete", "--force", "before")
}

func writeKey(t *T, path string, pub minisign.PublicKey) {
	text, _ := pub.MarshalText()
	if err := os.WriteFile(path, text, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
}

// buildRelease builds the binaries as version into dir, as `make
// release` does.
func (t *T) buildRelease(dir, version string) {
	stamp := "-X github.com/bangerdev/banger/internal/version.Version=" + version
	for _, args := range [][]string{
		{"build", "-ldflags", stamp, "-o", dir + "/", "./cmd/banger", "./cmd/bangerd"},
		{"build", "-trimpath", "-ldflags", "-s -w " + stamp, "-o", dir + "/", "./cmd/banger-agent"},
	} {
		cmd := exec.CommandContext(t.ctx, "go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// binariesSum is a digest of the scenario's binaries.
func (t *T) binariesSum() string {
	h := sha256.New()
	for _, name := range release.Binaries {
		b, err := os.ReadFile(filepath.Join(t.bin, name))
		if err != nil {
			t.Fatalf("%v", err)
		}
		h.Write(b)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func (t *T) untouched(sum string) {
	if got := t.binariesSum(); got != sum {
		t.Fatalf("the binaries changed")
	}
}

// sameVersions checks the CLI and the daemon are both version.
func (t *T) sameVersions(version string) {
	var v struct {
		Client api.BuildInfo
		Daemon *api.BuildInfo
	}
	r := t.Must("version", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Client.Version != version || v.Daemon == nil || v.Daemon.Version != version {
		t.Fatalf("want client and daemon %s: %s", version, r)
	}
}
