package cli

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/api/client"
	"github.com/bangerdev/banger/internal/units"
)

// e2bCommand is `banger e2b`: the E2B-compatible API bangerd serves
// (docs/e2b.md).
func e2bCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "e2b",
		Short: "The E2B-compatible API: its status, API keys and template names (docs/e2b.md)",
	}
	key := &cobra.Command{Use: "key", Short: "Make, list and revoke E2B API keys (e2b_…, kept hashed)"}
	key.AddCommand(e2bKeyCreateCommand(env), e2bKeyListCommand(env), e2bKeyRevokeCommand(env))
	tpl := &cobra.Command{Use: "template", Short: "Map E2B template names to images and shapes"}
	tpl.AddCommand(e2bTemplateSetCommand(env), e2bTemplateListCommand(env), e2bTemplateDeleteCommand(env))
	cmd.AddCommand(e2bStatusCommand(env), key, tpl)
	return cmd
}

func e2bStatusCommand(env *Env) *cobra.Command {
	return printed(env, &cobra.Command{Use: "status", Short: "Say whether the E2B API is served, where, and how to point the SDKs at it", Args: cobra.NoArgs},
		"print JSON", func(ctx context.Context, c *client.Client, _ []string) (api.E2BStatus, error) {
			return c.E2BStatus(ctx)
		}, func(s api.E2BStatus) error {
			switch {
			case s.Error != "":
				fmt.Fprintf(env.Stdout, "e2b api: not served: %s\n", s.Error)
			case !s.Enabled:
				fmt.Fprintf(env.Stdout, "e2b api: off (set [e2b] listen = \"127.0.0.1:3000\" in config.toml and restart the daemon)\n")
			default:
				fmt.Fprintf(env.Stdout, "e2b api: listening on %s (envd %s, domain %s)\n", s.Listen, s.EnvdVersion, s.Domain)
				fmt.Fprintf(env.Stdout, "  export E2B_API_URL=http://%s E2B_SANDBOX_URL=http://%s E2B_API_KEY=<a key of `banger e2b key create`>\n", s.Listen, s.Listen)
			}
			_, err := fmt.Fprintf(env.Stdout, "sandboxes %d, keys %d, templates %d\n", s.Sandboxes, s.Keys, s.Templates)
			return err
		})
}

func e2bKeyCreateCommand(env *Env) *cobra.Command {
	var p api.E2BKeyCreateParams
	var memory string
	cmd := printed(env, &cobra.Command{
		Use:   "create NAME [--max-sandboxes N] [--max-memory SIZE]",
		Short: "Make an API key (its secret is shown once); NAME labels its sandboxes in banger ps as e2b:NAME",
		Args:  cobra.ExactArgs(1),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.E2BKeyCreateResult, error) {
		p.Name = args[0]
		if memory != "" {
			n, err := units.ParseSize(memory)
			if err != nil {
				return api.E2BKeyCreateResult{}, fmt.Errorf("--max-memory: %w", err)
			}
			p.MaxMemoryMiB = int(n >> 20)
		}
		return c.CreateE2BKey(ctx, p)
	}, func(r api.E2BKeyCreateResult) error {
		_, err := fmt.Fprintf(env.Stdout, "%s\n(key %s, %s: shown this once; `banger e2b key revoke %s` ends it)\n", r.Secret, r.Key.ID, r.Key.Name, r.Key.ID)
		return err
	})
	cmd.Flags().IntVar(&p.MaxSandboxes, "max-sandboxes", 0, "sandboxes the key may have at once (0: no limit)")
	cmd.Flags().StringVar(&memory, "max-memory", "", "memory its sandboxes may have together, e.g. 8G (default: no limit)")
	return cmd
}

func e2bKeyListCommand(env *Env) *cobra.Command {
	return listed(env, &cobra.Command{Use: "list", Short: "List the API keys (never their secrets)", Args: cobra.NoArgs},
		(*client.Client).E2BKeys, func(k []api.E2BKey) any { return api.E2BKeyListResult{Keys: k} },
		[]string{"ID", "NAME", "MAX SANDBOXES", "MAX MEMORY", "CREATED"}, func(now time.Time, k api.E2BKey) []string {
			return []string{k.ID, k.Name, limit(k.MaxSandboxes, strconv.Itoa), limit(k.MaxMemoryMiB, func(n int) string { return units.FormatSize(int64(n) << 20) }), ago(now, k.Created)}
		})
}

func limit(n int, format func(int) string) string {
	if n == 0 {
		return "-"
	}
	return format(n)
}

func e2bKeyRevokeCommand(env *Env) *cobra.Command {
	return printed(env, &cobra.Command{Use: "revoke ID", Short: "Revoke an API key: refused from its next request on", Args: cobra.ExactArgs(1)},
		"print JSON", func(ctx context.Context, c *client.Client, args []string) (api.E2BKey, error) {
			return c.RevokeE2BKey(ctx, args[0])
		}, func(k api.E2BKey) error {
			_, err := fmt.Fprintf(env.Stdout, "revoked key %s (%s); its sandboxes run on until their timeout\n", k.ID, k.Name)
			return err
		})
}

func e2bTemplateSetCommand(env *Env) *cobra.Command {
	var t api.E2BTemplate
	var memory, disk string
	cmd := printed(env, &cobra.Command{
		Use:   "set NAME IMAGE [--cpus N] [--memory SIZE] [--disk SIZE]",
		Short: "Map an E2B template name to an image and shape, and warm that shape so creates of it are restores",
		Args:  cobra.ExactArgs(2),
	}, "print JSON", func(ctx context.Context, c *client.Client, args []string) (api.E2BTemplate, error) {
		t.Name, t.Image = args[0], args[1]
		var err error
		if t.MemoryMiB, t.DiskSize, err = parseSizes(memory, disk); err != nil {
			return api.E2BTemplate{}, err
		}
		return c.SetE2BTemplate(ctx, t)
	}, func(t api.E2BTemplate) error {
		_, err := fmt.Fprintf(env.Stdout, "template %s runs %s (%s)\n", t.Name, t.Image, shape(t))
		return err
	})
	f := cmd.Flags()
	f.IntVar(&t.VCPU, "cpus", 0, "virtual CPUs (default: vm_defaults.vcpu)")
	f.StringVar(&memory, "memory", "", "memory (default: vm_defaults.memory_mib)")
	f.StringVar(&disk, "disk", "", "work disk size (default: vm_defaults.disk_size)")
	return cmd
}

func shape(t api.E2BTemplate) string {
	out := "cpus " + limit(t.VCPU, strconv.Itoa) + ", memory " + limit(t.MemoryMiB, func(n int) string { return units.FormatSize(int64(n) << 20) })
	if t.DiskSize > 0 {
		return out + ", disk " + units.FormatSize(t.DiskSize)
	}
	return out + ", disk -"
}

func e2bTemplateListCommand(env *Env) *cobra.Command {
	return listed(env, &cobra.Command{Use: "list", Short: "List the E2B template names and what they run (\"base\" is e2b.base_image)", Args: cobra.NoArgs},
		(*client.Client).E2BTemplates, func(t []api.E2BTemplate) any { return api.E2BTemplateListResult{Templates: t} },
		[]string{"NAME", "IMAGE", "SHAPE"}, func(_ time.Time, t api.E2BTemplate) []string {
			return []string{t.Name, t.Image, shape(t)}
		})
}

func e2bTemplateDeleteCommand(env *Env) *cobra.Command {
	return printed(env, &cobra.Command{Use: "delete NAME", Short: "Remove an E2B template name", Args: cobra.ExactArgs(1)},
		"print JSON", func(ctx context.Context, c *client.Client, args []string) (api.E2BTemplate, error) {
			return c.DeleteE2BTemplate(ctx, args[0])
		}, func(t api.E2BTemplate) error {
			_, err := fmt.Fprintf(env.Stdout, "template %s removed\n", t.Name)
			return err
		})
}
