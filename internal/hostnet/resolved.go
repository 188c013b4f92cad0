package hostnet

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// AllowResolved lets the VM vmID reach addrs, which a name on its
// allow-list resolved to, for ttl: on every port when ports is empty,
// else on those (TCP and UDP). The kernel forgets them when ttl passes;
// an address already there gets the later of its two expiries.
func (n *Network) AllowResolved(vmID string, addrs []netip.Addr, ports []uint16, ttl time.Duration) error {
	anyPort, withPorts := n.vmSets(vmID)
	set, keys := anyPort, make([][]byte, 0, len(addrs))
	for _, a := range addrs {
		if !a.Is4() {
			continue
		}
		b := a.As4()
		if len(ports) == 0 {
			keys = append(keys, b[:])
			continue
		}
		set = withPorts
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			for _, p := range ports {
				// Each field padded to 4 bytes, as nft lays out a concatenation.
				keys = append(keys, []byte{proto, 0, 0, 0, b[0], b[1], b[2], b[3], byte(p >> 8), byte(p), 0, 0})
			}
		}
	}
	if len(keys) == 0 {
		return nil
	}
	k := key(vmID)
	until := time.Now().Add(ttl)
	n.resolvedMu.Lock()
	defer n.resolvedMu.Unlock()
	known := n.resolved[k]
	if known == nil {
		// Kept only once the kernel took an element: a VM without sets
		// (an ID made up) leaves nothing behind.
		known = map[string]time.Time{}
	}
	var fresh, renewed []nftables.SetElement
	for _, key := range keys {
		exp, ok := known[string(key)]
		switch {
		case !ok || time.Until(exp) < time.Second:
			fresh = append(fresh, nftables.SetElement{Key: key, Timeout: ttl})
		case exp.Before(until):
			renewed = append(renewed, nftables.SetElement{Key: key, Timeout: ttl})
		}
	}
	if len(fresh)+len(renewed) == 0 {
		return nil
	}
	if len(known)+len(fresh) > maxResolved {
		return fmt.Errorf("vm %s: its allow-list's names resolved to more than %d addresses; the newest are not allowed", vmID, maxResolved)
	}
	add := func(renew bool) error {
		c, err := nftables.New()
		if err != nil {
			return fmt.Errorf("opening nftables: %w", err)
		}
		if renew && len(renewed) > 0 {
			// A timeout is only set when an element is added: an
			// element is renewed by taking it out and putting it back.
			if err := c.SetDeleteElements(set, renewed); err != nil {
				return err
			}
		}
		if err := c.SetAddElements(set, append(fresh, renewed...)); err != nil {
			return err
		}
		return c.Flush()
	}
	err := add(true)
	if errors.Is(err, unix.ENOENT) {
		// One of the renewed expired meanwhile: add them all afresh.
		err = add(false)
	}
	if err != nil {
		return fmt.Errorf("allowing what vm %s resolved: %w", vmID, err)
	}
	for _, e := range append(fresh, renewed...) {
		known[string(e.Key)] = until
	}
	n.resolved[k] = known
	for key, exp := range known {
		if time.Now().After(exp) {
			delete(known, key)
		}
	}
	return nil
}

// forget drops what AllowResolved remembers of a VM.
func (n *Network) forget(vmID string) {
	n.resolvedMu.Lock()
	delete(n.resolved, key(vmID))
	n.resolvedMu.Unlock()
}
