package vm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bangerdev/banger/api"
)

// TestInit: --init picks PID 1 from what the image has. auto (the
// default) runs an image's systemd and the agent elsewhere; image on an
// image without systemd is refused with nothing left; such a VM boots
// (templates hold agent-init VMs), told on its command line, and keeps
// its init across a restart.
func TestInit(t *testing.T) {
	f := newFixture(t, withTemplates, func(c *Config) {
		c.Defaults.Network = api.NetworkUser
		plain := c.Images
		c.Images = imageFunc(func(ctx context.Context, name string) (api.Image, error) {
			if name != "sd" && name != "sha256:sd" {
				return plain.Resolve(ctx, name)
			}
			img, err := plain.Resolve(ctx, "debian")
			img.Name, img.ID, img.Init = "sd", "sha256:sd", "/sbin/init"
			return img, err
		})
	})
	ctx := context.Background()
	cmdline := func(v api.VM) string { return f.drv.Guest(f.svc.recs.run(v.ID)).Spec.Cmdline }
	for _, tc := range []struct {
		name, image, init string
		want              string // the VM's Init
		booted            bool   // booted, not restored from a template (made by the first)
	}{
		{name: "plain-auto", image: "debian", want: api.InitAgent},
		{name: "sd-auto", image: "sd", want: api.InitImage, booted: true},
		{name: "sd-image", image: "sd", init: api.InitImage, want: api.InitImage, booted: true},
		{name: "sd-agent", image: "sd", init: api.InitAgent, want: api.InitAgent},
		{name: "plain-agent", image: "debian", init: api.InitAgent, want: api.InitAgent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.drv.Restores()
			v, err := f.create(api.VMCreateParams{Name: tc.name, Image: tc.image, Init: tc.init})
			if err != nil {
				t.Fatal(err)
			}
			if v.Init != tc.want || f.show(tc.name).Init != tc.want {
				t.Fatalf("init = %q, want %q", v.Init, tc.want)
			}
			if booted := f.drv.Restores() == before; booted != tc.booted {
				t.Fatalf("booted = %v, want %v", booted, tc.booted)
			}
			if got := strings.Contains(cmdline(v), "banger.init=/sbin/init"); got != (tc.want == api.InitImage) {
				t.Fatalf("command line %q", cmdline(v))
			}
		})
	}
	if _, err := f.svc.Stop(ctx, api.VMStopParams{Name: "sd-auto"}); err != nil {
		t.Fatal(err)
	}
	v, err := f.svc.Start(ctx, api.VMRefParams{Name: "sd-auto"})
	if err != nil || !strings.Contains(cmdline(v), "banger.init=/sbin/init") || !strings.Contains(cmdline(v), "systemd.getty_auto=0") {
		t.Fatalf("restarted: %+v, %v", v, err)
	}

	n := len(f.list())
	for _, tc := range []struct{ image, init, saying string }{
		{"debian", api.InitImage, "image debian has no systemd"},
		{"debian", "sysvinit", `--init "sysvinit"`},
	} {
		_, err := f.create(api.VMCreateParams{Name: "refused", Image: tc.image, Init: tc.init})
		if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.saying) {
			t.Fatalf("--init %s with %s = %v, want invalid_argument saying %q", tc.init, tc.image, err, tc.saying)
		}
		if len(f.list()) != n {
			t.Fatalf("a refused create left a record: %+v", f.list())
		}
	}
}

func (f *fixture) list() []api.VM {
	f.t.Helper()
	l, err := f.svc.List(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return l.VMs
}
