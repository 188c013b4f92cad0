package cli

import (
	"os"
	"testing"

	"github.com/bangerdev/banger/internal/cmdio"
)

// TestCLIReferenceCoversEveryCommand keeps docs/cli.md true: every
// visible command and every one of its flags must appear in it. What the
// CLI hands over to bangerd, bangerd's own test checks (its flags are
// bangerd's).
func TestCLIReferenceCoversEveryCommand(t *testing.T) {
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	root := rootCommand(&Env{Streams: cmdio.OS()})
	root.InitDefaultCompletionCmd()
	for _, m := range cmdio.Undocumented(root, string(doc)) {
		t.Errorf("docs/cli.md does not mention %s", m)
	}
}
