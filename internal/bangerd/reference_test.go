package bangerd

import (
	"os"
	"testing"

	"github.com/bangerdev/banger/internal/cmdio"
)

// TestCLIReferenceCoversEveryCommand keeps docs/cli.md true for what the
// CLI hands over (`banger daemon run`, `banger system …`, `banger
// update`) and for bangerd itself.
func TestCLIReferenceCoversEveryCommand(t *testing.T) {
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{Streams: cmdio.OS()}
	for _, root := range []string{"banger", "bangerd"} {
		cmd := daemonCommand(env)
		if root == "banger" {
			cmd = handedOver(env)
		}
		for _, m := range cmdio.Undocumented(cmd, string(doc)) {
			t.Errorf("docs/cli.md does not mention %s", m)
		}
	}
}
