package agent_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agent/sshd"
	"github.com/bangerdev/banger/internal/sshkey"
)

// TestSSHOverAgentChannel runs an SSH session through the agent link
// itself, as `banger vm ssh` does for a VM without a network.
func TestSSHOverAgentChannel(t *testing.T) {
	user, err := sshkey.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	hk, err := sshkey.LoadOrCreate(filepath.Join(t.TempDir(), "hk"))
	if err != nil {
		t.Fatal(err)
	}
	srv := sshd.New(sshd.Config{HostKey: hk, Authorized: []ssh.PublicKey{user.PublicKey()}})
	a, b := net.Pipe()
	go (&agent.Server{SSH: srv.ServeConn}).Serve(b)
	c := agent.NewClient(a)
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Two connections at once, each its own stream on the one link.
	for i := range 2 {
		conn, err := c.DialSSH(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Connect as ourselves by uid, which needs no privileges.
		sc, chans, reqs, err := ssh.NewClientConn(conn, "agent", &ssh.ClientConfig{
			User: strconv.Itoa(os.Getuid()), Auth: []ssh.AuthMethod{ssh.PublicKeys(user)}, HostKeyCallback: ssh.FixedHostKey(hk.PublicKey()),
		})
		if err != nil {
			t.Fatal(err)
		}
		client := ssh.NewClient(sc, chans, reqs)
		defer client.Close()
		s, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.Output("echo session " + strconv.Itoa(i))
		if err != nil || string(out) != "session "+strconv.Itoa(i)+"\n" {
			t.Fatalf("over the agent channel: %q, %v", out, err)
		}
	}
	// The link still serves calls.
	if _, err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}
