package vm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/api"
)

// TestHostKeyInjection: what a guest reports as its SSH host key reaches
// known_hosts only as one key the host re-encoded: a second line naming
// a certificate authority for every host, options or a comment never do.
func TestHostKeyInjection(t *testing.T) {
	f := newFixture(t)
	v := f.mustCreate("web")
	g := f.drv.Guest(f.svc.recs.run(v.ID))
	good := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(g.HostKey)))
	before := knownHosts(t, f)
	for _, tc := range []struct {
		name, key string
		ok        bool
	}{
		{"a second line: @cert-authority for every host", good + "\n@cert-authority * " + good + "\n", false},
		{"a second key", good + "\n" + good, false},
		{"garbage", "not a key\n*.example.com " + good, false},
		{"a comment and options", `command="rm -rf ~" ` + good + " evil@comment", true},
		{"20 KiB", strings.Repeat("A", 20<<10), false},
	} {
		g.ReportHostKey(tc.key)
		_, err := f.svc.SSH(context.Background(), api.VMRefParams{Name: "web"})
		kh := knownHosts(t, f)
		if strings.Contains(kh, "@cert-authority") || strings.Contains(kh, "evil") || strings.Contains(kh, "command=") || strings.Count(kh, "\n") != strings.Count(before, "\n") {
			t.Fatalf("%s: known_hosts became\n%s", tc.name, kh)
		}
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, api.ErrGuestRefused)) {
			t.Fatalf("%s: ssh = %v", tc.name, err)
		}
		if tc.ok && !strings.Contains(kh, "web.vm "+good+"\n") {
			t.Fatalf("%s: known_hosts lacks the key:\n%s", tc.name, kh)
		}
	}
}

// TestHostileIdentityAnswer: a guest (its memory carried into a fork's
// copies) answers its new identity with a host key line crafted to
// widen known_hosts; the fork is refused as the guest's doing, no copy
// is left, and known_hosts is as it was.
func TestHostileIdentityAnswer(t *testing.T) {
	f := newFixture(t)
	v := f.mustCreate("web")
	g := f.drv.Guest(f.svc.recs.run(v.ID))
	good := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(g.HostKey)))
	before := knownHosts(t, f)
	g.ReportHostKey(good + "\n@cert-authority * " + good + "\n")
	_, err := f.svc.Fork(context.Background(), api.VMForkParams{Name: "web", Count: 2})
	if !errors.Is(err, api.ErrGuestRefused) {
		t.Fatalf("fork of a hostile guest = %v", err)
	}
	if kh := knownHosts(t, f); kh != before {
		t.Fatalf("known_hosts became\n%s", kh)
	}
	if l, _ := f.svc.List(context.Background()); len(l.VMs) != 1 {
		t.Fatalf("a refused fork left %d VMs", len(l.VMs))
	}
}

// FuzzHostKeyLine: whatever a guest reports as its host key, what
// reaches known_hosts is one line of one key, or nothing.
func FuzzHostKeyLine(f *testing.F) {
	f.Add("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl banger")
	f.Add("@cert-authority * ssh-ed25519 AAAA\nx")
	f.Fuzz(func(t *testing.T, reported string) {
		line, err := hostKeyLine(reported)
		if err != nil {
			return
		}
		if strings.ContainsAny(line, "\r\n@") || len(strings.Fields(line)) != 2 {
			t.Fatalf("%q became %q", reported, line)
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			t.Fatalf("%q became %q, which is no key: %v", reported, line, err)
		}
	})
}
