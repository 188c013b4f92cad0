package nethelper

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/hostnet"
)

// Client is the daemon's side: the bridge network done by the helper.
// It is what vm.Config.Bridge takes, as a *hostnet.Network is in a root
// daemon.
type Client struct {
	Socket string
	prefix netip.Prefix
	// OnUp is told the gateway once an attach found or made the bridge,
	// as hostnet.Config.OnUp.
	OnUp func(gateway netip.Addr)
	Log  *slog.Logger
}

// NewClient checks that the helper at socket answers, and serves the
// bridge network the daemon is configured for.
func NewClient(ctx context.Context, socket string, prefix netip.Prefix, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{Socket: socket, prefix: prefix.Masked(), Log: log}
	var st StatusResult
	err := c.call(ctx, OpStatus, nil, &st)
	var dial *net.OpError
	if errors.As(err, &dial) && dial.Op == "dial" {
		// Not up yet (or restarting): bridge work fails, saying so, until
		// it is; nothing else waits for it.
		log.Warn("the network helper does not answer yet", "socket", socket, "err", err)
		return c, nil
	}
	if err != nil {
		return nil, err
	}
	if st.Prefix != c.prefix.String() {
		return nil, fmt.Errorf("the network helper serves %s, but network.cidr is %s; they read the same config.toml: restart the helper (`banger system restart`)", st.Prefix, c.prefix)
	}
	return c, nil
}

// Prefix is the bridge's network.
func (c *Client) Prefix() netip.Prefix { return c.prefix }

// Gateway is the bridge's own address.
func (c *Client) Gateway() netip.Addr { return hostnet.GatewayOf(c.prefix) }

// Range is the first and last address a VM may lease.
func (c *Client) Range() (first, last netip.Addr) { return hostnet.RangeOf(c.prefix) }

// Ours says whether the bridge exists.
func (c *Client) Ours() bool {
	var st StatusResult
	return c.call(context.Background(), OpStatus, nil, &st) == nil && st.Ours
}

func wire(a hostnet.Attachment) Attachment {
	return Attachment{ID: a.ID, MAC: a.MAC.String(), Addr: a.Addr.String(), NAT: a.Policy.NAT, Allow: a.Policy.Allow.Strings(), Isolate: a.Policy.Isolate}
}

// Attach asks for the VM's tap and rules.
func (c *Client) Attach(a hostnet.Attachment) (string, error) {
	var r AttachResult
	if err := c.call(context.Background(), OpAttach, wire(a), &r); err != nil {
		return "", err
	}
	if r.Tap != hostnet.TapName(a.ID) {
		return "", fmt.Errorf("the network helper made tap %q for vm %s", r.Tap, a.ID)
	}
	if c.OnUp != nil {
		c.OnUp(c.Gateway())
	}
	return r.Tap, nil
}

// SetPolicy asks for a running VM's new policy.
func (c *Client) SetPolicy(a hostnet.Attachment) error {
	return c.call(context.Background(), OpSetPolicy, wire(a), nil)
}

// Detach asks for the VM's tap and rules to go.
func (c *Client) Detach(vmID string) error {
	return c.call(context.Background(), OpDetach, VMRef{ID: vmID}, nil)
}

// Sync asks for the running VMs' rules again, and the rest swept.
func (c *Client) Sync(running []hostnet.Attachment) ([]string, error) {
	p := SyncParams{Running: []Attachment{}}
	for _, a := range running {
		p.Running = append(p.Running, wire(a))
	}
	var r SyncResult
	err := c.call(context.Background(), OpSync, p, &r)
	return r.Removed, err
}

// AllowResolved asks for what a VM's allowed name resolved to.
func (c *Client) AllowResolved(vmID string, addrs []netip.Addr, ports []uint16, ttl time.Duration) error {
	p := ResolvedParams{ID: vmID, Ports: ports, TTLSeconds: int(ttl.Round(time.Second) / time.Second)}
	for _, a := range addrs {
		p.Addrs = append(p.Addrs, a.String())
	}
	return c.call(context.Background(), OpAllowResolved, p, nil)
}

// DNSSocket is a UDP socket bound to the gateway's port 53, which the
// daemon may not bind itself.
func (c *Client) DNSSocket(addr netip.AddrPort) (*net.UDPConn, error) {
	if addr != netip.AddrPortFrom(c.Gateway(), 53) {
		return nil, fmt.Errorf("the network helper binds the gateway's port 53 only, not %s", addr)
	}
	conn, err := c.dial(context.Background())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := send(conn, OpDNSSocket, nil); err != nil {
		return nil, err
	}
	buf, oob := make([]byte, 4096), make([]byte, syscall.CmsgSpace(4))
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("the network helper's DNS socket: %w", err)
	}
	if err := decode(buf[:n], nil); err != nil {
		return nil, err
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("the network helper's DNS socket: no descriptor came (%v)", err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("the network helper's DNS socket: %d descriptors (%v)", len(fds), err)
	}
	f := os.NewFile(uintptr(fds[0]), "dns")
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	udp, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, errors.New("the network helper's DNS socket is not UDP")
	}
	return udp, nil
}

// Watch reads the firewall's log through the helper until ctx ends,
// dialing again when the helper restarts.
func (c *Client) Watch(ctx context.Context, seen func(hostnet.Attempt)) error {
	conn, r, err := c.openWatch(ctx)
	if err != nil {
		return err
	}
	go func() {
		for {
			c.readWatch(ctx, conn, r, seen)
			if ctx.Err() != nil {
				return
			}
			for { // the helper went away: wait for the next one
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				if conn, r, err = c.openWatch(ctx); err == nil {
					break
				}
			}
		}
	}()
	return nil
}

func (c *Client) openWatch(ctx context.Context) (*net.UnixConn, *bufio.Reader, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := send(conn, OpWatch, nil); err != nil {
		conn.Close()
		return nil, nil, err
	}
	r := bufio.NewReader(conn)
	line, err := readLine(r)
	if err == nil {
		err = decode(line, nil)
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, r, nil
}

func (c *Client) readWatch(ctx context.Context, conn *net.UnixConn, r *bufio.Reader, seen func(hostnet.Attempt)) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	for {
		line, err := readLine(r)
		if err != nil {
			return
		}
		var a Attempt
		if json.Unmarshal(line, &a) != nil {
			continue
		}
		dst, err := netip.ParseAddr(a.Dst)
		if err != nil {
			continue
		}
		seen(hostnet.Attempt{VM: a.VM, Time: time.Unix(0, a.Time), Allowed: a.Allowed, ToHost: a.ToHost, Proto: a.Proto, Dst: dst, Port: a.Port})
	}
}

func (c *Client) dial(ctx context.Context) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return nil, fmt.Errorf("reaching the network helper at %s: %w; is it running (`banger system status`)?", c.Socket, err)
	}
	return conn.(*net.UnixConn), nil
}

func send(conn *net.UnixConn, op string, params any) error {
	req := Request{Op: op}
	if params != nil {
		raw, err := json.Marshal(params)
		if err != nil {
			return err
		}
		req.Params = raw
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err = conn.Write(append(b, '\n'))
	return err
}

// decode reads a response line into result (nil: ignored).
func decode(line []byte, result any) error {
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("the network helper's answer: %w", err)
	}
	if resp.Error != nil {
		return resp.Error
	}
	if result == nil || len(resp.Result) == 0 {
		return nil
	}
	return json.Unmarshal(resp.Result, result)
}

// call sends one request and reads its answer. Bridge operations may
// take a while (nftables, netlink), but never long.
func (c *Client) call(ctx context.Context, op string, params, result any) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	sendErr := send(conn, op, params)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
	// A helper that refuses the caller answers before it reads, then
	// hangs up: the send may meet a closed socket with the refusal
	// already waiting to be read.
	line, err := readLine(bufio.NewReader(conn))
	if err != nil {
		return fmt.Errorf("asking the network helper (%s): %w", op, cmp.Or(sendErr, err))
	}
	return decode(line, result)
}
