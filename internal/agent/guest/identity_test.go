//go:build linux

package guest

import (
	"crypto/rand"
	"testing"

	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/roottest"
)

// TestReseed: the random pool takes the host's entropy, credited, and
// reseeds at once (the ioctls, their argument's layout). Run on this
// machine's kernel, as the agent runs them on the guest's.
func TestReseed(t *testing.T) {
	roottest.Require(t, "RNDADDENTROPY needs CAP_SYS_ADMIN")
	b := make([]byte, 64)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	if err := reseed(b); err != nil {
		t.Fatal(err)
	}
}

func TestIdentityRefusals(t *testing.T) {
	g := &guest{sshReady: make(chan struct{})}
	for name, p := range map[string]struct {
		boot, machine string
		entropy       int
	}{
		"a bad boot argument":   {"banger.ip=x banger.mac=52:54:00:00:00:01", "", 64},
		"a climbing machine id": {"", "../../../../etc/passwd", 64},
		"too little entropy":    {"", "", 8},
		"too much entropy":      {"", "", maxEntropy + 1},
	} {
		_, err := g.identify(identityParams(p.boot, p.machine, p.entropy))
		if err == nil {
			t.Errorf("%s: taken", name)
		}
	}
}

func identityParams(boot, machine string, entropy int) proto.IdentityParams {
	return proto.IdentityParams{Boot: boot, MachineID: machine, Entropy: make([]byte, entropy)}
}
