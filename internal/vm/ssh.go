package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
)

// sshHost is a VM's name for ssh: its known_hosts alias.
func sshHost(name string) string { return name + ".vm" }

// SSH says how OpenSSH reaches a running VM, and makes sure banger's
// known_hosts holds the VM's host key.
func (s *Service) SSH(ctx context.Context, p api.VMRefParams) (api.VMSSHInfo, error) {
	rec, c, err := s.awake(ctx, p.Name)
	if err != nil {
		return api.VMSSHInfo{}, err
	}
	if err := s.learnHostKey(ctx, rec.Name, c); err != nil {
		return api.VMSSHInfo{}, err
	}
	return api.VMSSHInfo{Name: rec.Name, User: "root", Host: sshHost(rec.Name),
		IdentityFile: s.cfg.SSH.IdentityFile, KnownHostsFile: s.cfg.SSH.KnownHostsFile, Dir: rec.Workspace}, nil
}

// DialSSH connects to a running VM's SSH server through its agent.
func (s *Service) DialSSH(ctx context.Context, p api.VMRefParams) (net.Conn, error) {
	_, c, err := s.awake(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	return c.DialSSH(ctx)
}

// learnHostKey records the guest's SSH host key, as its agent reports
// it, under the VM's alias in banger's known_hosts.
func (s *Service) learnHostKey(ctx context.Context, name string, c *client.Client) error {
	var info proto.InfoResult
	if err := c.Call(ctx, proto.MethodInfo, nil, &info); err != nil {
		return fmt.Errorf("asking vm %s for its SSH host key: %w", name, err)
	}
	return s.recordHostKey(name, info.SSHHostKey)
}

// recordHostKey records what the guest of vm name reports as its SSH
// host key, checked, under the VM's alias in banger's known_hosts.
func (s *Service) recordHostKey(name, reported string) error {
	if reported == "" {
		return fmt.Errorf("vm %s: its agent serves no SSH (see `banger vm logs %s`)", name, name)
	}
	line, err := hostKeyLine(reported)
	if err != nil {
		return fmt.Errorf("vm %s: its agent's host key: %w: %w", name, api.ErrGuestRefused, err)
	}
	return s.setKnownHost(sshHost(name), line)
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

// setKnownHost replaces host's line of the known_hosts file (key ""
// removes it), writing the file whole.
func (s *Service) setKnownHost(host, key string) error {
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	path := s.cfg.SSH.KnownHostsFile
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
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
