package vm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/wholefile"
)

// identity is a guest's identity as the host keeps it: the one a guest
// restored from a saved state is given (clock, random pool, machine-id,
// hostname, network, banger's SSH key), and the guests' SSH host keys in
// banger's known_hosts, checked before they are written there.
type identity struct {
	knownHosts string // "": none kept

	mu sync.Mutex // the known_hosts file
}

// sshHost is a VM's name for ssh: its known_hosts alias.
func sshHost(name string) string { return name + ".vm" }

// give gives the guest of rec, just restored from a saved state, its
// VM's identity, params being what rec's agent is told at boot; with
// newHostKey also a host key of its own, which known_hosts then records.
func (id *identity) give(ctx context.Context, rec store.VM, c *client.Client, params proto.BootParams, newHostKey bool) error {
	v := c.Protocol() // WaitAgent pinged it
	if v == 0 {
		ping, err := c.Ping(ctx)
		if err != nil {
			return fmt.Errorf("vm %s: reaching its agent: %w", rec.Name, err)
		}
		v = proto.PingProtocol(ping)
	}
	if v < proto.IdentityProtocol {
		return fmt.Errorf("vm %s: its agent speaks protocol %d and cannot take a new identity (%d): restart it to give it this release's agent (`banger vm restart %s`)", rec.Name, v, proto.IdentityProtocol, rec.Name)
	}
	entropy := make([]byte, 64)
	if _, err := rand.Read(entropy); err != nil {
		return err
	}
	p := proto.IdentityParams{Boot: strings.Join(params.Args(), " "), UnixNano: time.Now().UnixNano(),
		Entropy: entropy, MachineID: params.MachineID, NewHostKey: newHostKey}
	var r proto.IdentityResult
	if err := c.Call(ctx, proto.MethodIdentity, p, &r); err != nil {
		return fmt.Errorf("vm %s: giving its guest its identity: %w", rec.Name, err)
	}
	if id.knownHosts != "" {
		return id.record(rec.Name, r.SSHHostKey)
	}
	return nil
}

// learn records the guest's SSH host key, as its agent reports it, under
// the VM's alias in banger's known_hosts.
func (id *identity) learn(ctx context.Context, name string, c *client.Client) error {
	if id.knownHosts == "" {
		return nil
	}
	var info proto.InfoResult
	if err := c.Call(ctx, proto.MethodInfo, nil, &info); err != nil {
		return fmt.Errorf("asking vm %s for its SSH host key: %w", name, err)
	}
	return id.record(name, info.SSHHostKey)
}

// forget removes the VM named name from known_hosts.
func (id *identity) forget(name string) error {
	if id.knownHosts == "" {
		return nil
	}
	if err := id.set(sshHost(name), ""); err != nil {
		return fmt.Errorf("removing vm %s from known_hosts: %w", name, err)
	}
	return nil
}

// record records what the guest of vm name reports as its SSH host key,
// checked, under the VM's alias in banger's known_hosts.
func (id *identity) record(name, reported string) error {
	if reported == "" {
		return fmt.Errorf("vm %s: its agent serves no SSH (see `banger vm logs %s`)", name, name)
	}
	line, err := hostKeyLine(reported)
	if err != nil {
		return fmt.Errorf("vm %s: its agent's host key: %w: %w", name, api.ErrGuestRefused, err)
	}
	return id.set(sshHost(name), line)
}

// hostKeyLine is the known_hosts key of what a guest reports as its host
// key: exactly one key, re-encoded by the host (type and base64 alone).
// Whatever else the guest put there (a second line such as
// "@cert-authority * ssh-ed25519 …", options, a comment) never reaches
// the file.
func hostKeyLine(reported string) (string, error) {
	if len(reported) > 16<<10 {
		return "", fmt.Errorf("%d bytes is no SSH host key", len(reported))
	}
	if strings.ContainsAny(strings.TrimSpace(reported), "\r\n") {
		return "", fmt.Errorf("more than one line: %q", short(reported))
	}
	pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(reported))
	if err != nil {
		return "", fmt.Errorf("%q: %w", short(reported), err)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return "", fmt.Errorf("more than one key: %q", short(reported))
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return "", errors.New("a certificate, not a host key")
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), nil
}

func short(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// set replaces host's line of the known_hosts file (key "" removes it),
// writing the file whole.
func (id *identity) set(host, key string) error {
	id.mu.Lock()
	defer id.mu.Unlock()
	path := id.knownHosts
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	var b bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(old))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] == host {
			continue
		}
		b.WriteString(sc.Text() + "\n")
	}
	if key != "" {
		fmt.Fprintf(&b, "%s %s\n", host, key)
	}
	if bytes.Equal(b.Bytes(), old) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return wholefile.Write(path, b.Bytes(), 0o600)
}
