package cli

import (
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestCLIReferenceCoversEveryCommand keeps docs/cli.md true: every
// visible command and every one of its flags must appear in it.
func TestCLIReferenceCoversEveryCommand(t *testing.T) {
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	root := NewApp().rootCommand()
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		path := c.CommandPath()
		if !strings.Contains(text, path) {
			t.Errorf("docs/cli.md does not mention %q", path)
		}
		c.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			if f.Hidden || f.Name == "help" {
				return
			}
			if !strings.Contains(text, "--"+f.Name) {
				t.Errorf("docs/cli.md does not mention flag --%s of %q", f.Name, path)
			}
		})
		for _, sub := range c.Commands() {
			if sub.Parent() == root && strings.HasPrefix(sub.Name(), "completion") {
				if !strings.Contains(text, "banger completion") {
					t.Error("docs/cli.md does not mention banger completion")
				}
				continue
			}
			walk(sub)
		}
	}
	walk(root)
}
