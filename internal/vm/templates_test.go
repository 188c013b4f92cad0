package vm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/objdir"
	"github.com/bangerdev/banger/internal/vmm"
)

// TestWarmCreate: the first create of a shape makes its template, every
// create of it then restores it, each guest given its own identity (its
// name, its ID as machine-id, fresh entropy, a new host key, which
// known_hosts records); another shape gets a template of its own, --cold
// boots, and a template that no longer loads is made again.
func TestWarmCreate(t *testing.T) {
	f := newFixture(t, withTemplates, func(c *Config) { c.Defaults.Network = api.NetworkUser })
	ctx := context.Background()
	// The fake driver counts a restore as a start too.
	boots := func() int { return f.drv.Starts() - f.drv.Restores() }
	a := f.mustCreate("a")
	if f.drv.Restores() != 1 || boots() != 1 {
		t.Fatalf("first create: %d restores, %d boots; want the template booted and a restore", f.drv.Restores(), boots())
	}
	b := f.mustCreate("b")
	if f.drv.Restores() != 2 || boots() != 1 {
		t.Fatalf("second create: %d restores, %d boots; want a restore alone", f.drv.Restores(), boots())
	}
	ids := map[string]proto.IdentityParams{}
	for _, v := range []api.VM{a, b} {
		g := f.drv.Guest(f.svc.recs.run(v.ID))
		got := g.Identities()
		if len(got) != 1 {
			t.Fatalf("%s was given %d identities", v.Name, len(got))
		}
		p := got[0]
		bp, err := proto.ParseBootParams(p.Boot)
		if err != nil {
			t.Fatal(err)
		}
		if bp.Hostname != v.Name || p.MachineID != v.ID || !p.NewHostKey || len(p.Entropy) < 32 || p.UnixNano == 0 ||
			bp.Net == nil || len(bp.SSHKeys) != 1 {
			t.Fatalf("%s's identity: %+v (%+v)", v.Name, p, bp)
		}
		ids[v.Name] = p
		line, err := hostKeyLine(string(sshAuthorized(g.HostKey)))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(knownHosts(t, f), line) {
			t.Fatalf("known_hosts lacks %s's new host key", v.Name)
		}
	}
	if bytes.Equal(ids["a"].Entropy, ids["b"].Entropy) {
		t.Fatal("two VMs were given the same entropy")
	}
	if l, err := f.svc.Templates(ctx); err != nil || len(l.Templates) != 1 || l.Templates[0].Image != "debian" || l.Templates[0].Kernel != "6.1" ||
		l.Templates[0].NIC != "user" || l.Templates[0].StateBytes == 0 || l.Templates[0].MemoryMiB != 256 {
		t.Fatalf("templates = %+v, %v", l, err)
	}
	// Another size, another template.
	if _, err := f.create(api.VMCreateParams{Name: "big", MemoryMiB: 512}); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(f.cfg.TemplateDir); len(entries) != 2 || boots() != 2 {
		t.Fatalf("templates after another shape: %v, %d boots", entries, boots())
	}
	// --cold boots.
	restores := f.drv.Restores()
	if _, err := f.create(api.VMCreateParams{Name: "cold", Cold: true}); err != nil || f.drv.Restores() != restores {
		t.Fatalf("a cold create: %v, %d restores", err, f.drv.Restores())
	}
	// A template its VMM refuses is made again.
	k := keyOf(f.record("a"))
	st := filepath.Join(f.svc.tmpl.dir(k), templateState, vmm.StateFile)
	b2, err := os.ReadFile(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st, bytes.Replace(b2, []byte(`"memory_mib": 256`), []byte(`"memory_mib": 999`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	before := boots()
	if _, err := f.create(api.VMCreateParams{Name: "again"}); err != nil {
		t.Fatal(err)
	}
	if boots() != before+1 {
		t.Fatalf("a stale template was not made again: %d boots", boots())
	}
	// Its kernel gone, or its image, its templates go.
	images, kernel := f.svc.cfg.Images, f.svc.cfg.Kernel
	f.svc.cfg.Kernel = func(context.Context, string) (api.Kernel, error) { return api.Kernel{}, api.ErrNotFound }
	f.svc.DropTemplates(ctx)
	if entries, _ := os.ReadDir(f.cfg.TemplateDir); len(entries) != 0 {
		t.Fatalf("templates of a deleted kernel: %v", entries)
	}
	f.svc.cfg.Kernel = kernel
	if _, err := f.svc.Warm(ctx, api.ImageWarmParams{Image: "debian"}); err != nil {
		t.Fatal(err)
	}
	f.svc.cfg.Images = imageFunc(func(context.Context, string) (api.Image, error) { return api.Image{}, api.ErrNotFound })
	f.svc.DropTemplates(ctx)
	if entries, _ := os.ReadDir(f.cfg.TemplateDir); len(entries) != 0 {
		t.Fatalf("templates of a deleted image: %v", entries)
	}
	f.svc.cfg.Images = images
}

// TestTemplateBuildCutShort: a daemon that died while making a template
// left its VMM and half a template (in objdir's staging, or as an older
// banger made it, KEY.building), or while removing one left it set aside;
// the next one ends and removes them all, and keeps the whole templates.
func TestTemplateBuildCutShort(t *testing.T) {
	for _, layout := range []string{"staged", "legacy"} {
		t.Run(layout, func(t *testing.T) {
			f := newFixture(t, withTemplates)
			f.mustCreate("a")
			k := keyOf(f.record("a"))
			dir := f.svc.tmpl.dir(k) + legacyBuilding
			if layout == "staged" {
				stage, err := objdir.Stage(f.cfg.TemplateDir, k.name(), "template.build", "template")
				if err != nil {
					t.Fatal(err)
				}
				dir = stage.Path()
			} else if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			aside := filepath.Join(f.cfg.TemplateDir, ".deleting-0123456789abcdef")
			if err := os.MkdirAll(filepath.Join(aside, templateState), 0o700); err != nil {
				t.Fatal(err)
			}
			runDir := f.svc.tmpl.runDir(k)
			if err := os.MkdirAll(runDir, 0o700); err != nil {
				t.Fatal(err)
			}
			in, err := f.drv.Start(context.Background(), vmm.Spec{Dir: runDir})
			if err != nil {
				t.Fatal(err)
			}
			id := in.ID()
			if err := os.WriteFile(filepath.Join(dir, templatePID), []byte(strconv.Itoa(id.PID)+" "+strconv.FormatUint(id.StartTime, 10)), 0o600); err != nil {
				t.Fatal(err)
			}
			f.st.Close()
			f.open()
			if err := f.svc.Reconcile(context.Background()); err != nil {
				t.Fatal(err)
			}
			waitGone(t, id.PID)
			for _, left := range []string{dir, aside, runDir} {
				if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s is left: %v", left, err)
				}
			}
			if _, err := os.Stat(filepath.Join(f.svc.tmpl.dir(k), templateKeyFile)); err != nil {
				t.Fatalf("the whole template went too: %v", err)
			}
		})
	}
}

// TestTemplateFailureRemembered: a template that cannot be made leaves
// the create to boot, and the next creates of that shape boot too for a
// while, rather than each paying for another attempt.
func TestTemplateFailureRemembered(t *testing.T) {
	f := newFixture(t, withTemplates)
	// A file where the templates go: no template can be made.
	if err := os.WriteFile(f.cfg.TemplateDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if v := f.mustCreate("a"); v.State != api.VMRunning || f.drv.Restores() != 0 {
		t.Fatalf("a create whose template failed: %+v, %d restores", v, f.drv.Restores())
	}
	if err := os.Remove(f.cfg.TemplateDir); err != nil {
		t.Fatal(err)
	}
	if v := f.mustCreate("b"); v.State != api.VMRunning || f.drv.Restores() != 0 {
		t.Fatalf("the next create tried the template again: %d restores", f.drv.Restores())
	}
	if _, err := os.Stat(f.cfg.TemplateDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a template was made: %v", err)
	}
	// image warm tries again, and the next create starts from it.
	if _, err := f.svc.Warm(context.Background(), api.ImageWarmParams{Image: "debian"}); err != nil {
		t.Fatalf("image warm after a failure: %v", err)
	}
	f.mustCreate("c")
	if f.drv.Restores() != 1 {
		t.Fatalf("after image warm: %d restores", f.drv.Restores())
	}
}

// TestShareGroups: a VM restored from a saved state may share its pages
// with the VMs of its creator alone (the driver's Spec.Share): the CLI's,
// one MCP server's, one E2B key's; --no-share, vm_defaults.share = false
// and a fork's --no-share share with none, and a copy of such a VM never
// does.
func TestShareGroups(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		p         api.VMCreateParams
		defNo     bool // vm_defaults.share = false
		forkNo    bool // the copy forked with --no-share
		want      string
		wantCopy  string
		wantShown bool // vm show's no_share
	}{
		{"the CLI", api.VMCreateParams{}, false, false, "cli", "cli", false},
		{"an MCP server", api.VMCreateParams{Creator: "mcp:agent"}, false, false, "mcp:agent", "mcp:agent", false},
		{"an E2B key", api.VMCreateParams{Creator: "e2b:team"}, false, false, "e2b:team", "e2b:team", false},
		{"--no-share", api.VMCreateParams{NoShare: true}, false, false, "", "", true},
		{"vm_defaults.share = false", api.VMCreateParams{}, true, false, "", "", true},
		{"a fork with --no-share", api.VMCreateParams{}, false, true, "cli", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, withTemplates, func(c *Config) { c.Defaults.Network = api.NetworkUser; c.Defaults.NoShare = tc.defNo })
			p := tc.p
			p.Name = "orig"
			v, err := f.create(p)
			if err != nil {
				t.Fatal(err)
			}
			if f.drv.Restores() != 1 {
				t.Fatalf("%d restores: the VM did not start from its template", f.drv.Restores())
			}
			if got := f.drv.Guest(f.svc.recs.run(v.ID)).Spec.Share; got != tc.want || v.NoShare != tc.wantShown {
				t.Fatalf("restored in group %q (no_share %v), want %q (%v)", got, v.NoShare, tc.want, tc.wantShown)
			}
			res, err := f.svc.Fork(ctx, api.VMForkParams{Name: "orig", NoShare: tc.forkNo})
			if err != nil {
				t.Fatal(err)
			}
			if got := f.drv.Guest(f.svc.recs.run(res.VMs[0].ID)).Spec.Share; got != tc.wantCopy {
				t.Fatalf("its copy restored in group %q, want %q", got, tc.wantCopy)
			}
		})
	}
}

// TestLegacyTemplate: a QEMU template saved before mapped memory is made
// again (it would load, but read whole and share nothing); others stay.
func TestLegacyTemplate(t *testing.T) {
	for _, tc := range []struct {
		state string
		want  bool
	}{
		{`{"vmm":"qemu","size":1}`, true},
		{`{"vmm":"qemu","size":1,"memory_mib":1,"mapped":true}`, false},
		{`{"vmm":"firecracker","size":1}`, false},
		{``, false},
	} {
		dir := t.TempDir()
		if tc.state != "" {
			os.WriteFile(filepath.Join(dir, vmm.StateFile), []byte(tc.state), 0o600)
			os.WriteFile(filepath.Join(dir, vmm.MemoryFile), []byte{0}, 0o600)
			f, _ := os.Create(filepath.Join(dir, vmm.RAMFile))
			f.Truncate(1 << 20)
			f.Close()
		}
		if got := legacy(dir); got != tc.want {
			t.Errorf("%s: legacy = %v, want %v", tc.state, got, tc.want)
		}
	}
}
