package cmdio

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Undocumented lists what of root's command tree the CLI reference doc
// does not mention: every visible command's path and every visible flag.
// The two programs' tests keep docs/cli.md true with it.
func Undocumented(root *cobra.Command, doc string) []string {
	var missing []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		path := c.CommandPath()
		if !strings.Contains(doc, path) {
			missing = append(missing, "command "+path)
		}
		c.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			if !f.Hidden && f.Name != "help" && !strings.Contains(doc, "--"+f.Name) {
				missing = append(missing, "flag --"+f.Name+" of "+path)
			}
		})
		for _, sub := range c.Commands() {
			if sub.Parent() == root && strings.HasPrefix(sub.Name(), "completion") {
				if !strings.Contains(doc, root.Name()+" completion") {
					missing = append(missing, "command "+root.Name()+" completion")
				}
				continue
			}
			walk(sub)
		}
	}
	walk(root)
	return missing
}
