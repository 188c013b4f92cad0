// Package nethelper is the narrow root helper of an installed banger:
// the daemon runs as its owner, and the few things that need root (the
// bridge, taps the owner's VMM may open, the VMs' nftables rules and
// sets, a socket bound to port 53, the firewall's log) are asked of this
// helper over a unix socket only the owner may use.
//
// The protocol is one JSON request line per connection, answered by one
// JSON line; dns_socket's answer carries the bound socket (SCM_RIGHTS),
// watch's is followed by a line per logged attempt until either side
// hangs up. The helper takes no path, no interface name and no address
// outside its own bridge network: taps are named from VM IDs, the bridge
// and its network come from the helper's own configuration, and every
// argument is checked before anything is touched (Server).
package nethelper

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Owner is the bridge's owner tag (its link alias) of the helper serving
// on socket.
func Owner(socket string) string { return "helper " + socket }

// The operations, and nothing else.
const (
	OpStatus        = "status"         // {} → StatusResult
	OpAttach        = "attach"         // Attachment → AttachResult
	OpSetPolicy     = "set_policy"     // Attachment → {}
	OpDetach        = "detach"         // VMRef → {}
	OpSync          = "sync"           // SyncParams → SyncResult
	OpAllowResolved = "allow_resolved" // ResolvedParams → {}
	OpDNSSocket     = "dns_socket"     // {} → {} and a UDP socket bound to the gateway's port 53
	OpWatch         = "watch"          // {} → {}, then Attempt lines
)

// Ops lists the operations, for the refusal of any other.
func Ops() []string {
	return []string{OpStatus, OpAttach, OpSetPolicy, OpDetach, OpSync, OpAllowResolved, OpDNSSocket, OpWatch}
}

// Request is what the daemon asks.
type Request struct {
	Op     string          `json:"op"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Response answers a request: Error, or Result.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// Error is a refusal or a failure.
type Error struct {
	// Invalid: the request itself was refused (an argument, the
	// operation, the caller); else the operation failed.
	Invalid bool   `json:"invalid,omitempty"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return "the network helper: " + e.Message }

// ErrRefused is what an Error with Invalid unwraps to.
var ErrRefused = errors.New("refused")

func (e *Error) Unwrap() error {
	if e.Invalid {
		return ErrRefused
	}
	return nil
}

// Attachment is a VM on the bridge, as the daemon asks for it.
type Attachment struct {
	ID      string   `json:"id"`
	MAC     string   `json:"mac"`
	Addr    string   `json:"addr"`
	NAT     bool     `json:"nat,omitempty"`
	Allow   []string `json:"allow,omitempty"`
	Isolate bool     `json:"isolate,omitempty"`
}

// AttachResult answers OpAttach.
type AttachResult struct {
	Tap string `json:"tap"`
}

// VMRef names a VM.
type VMRef struct {
	ID string `json:"id"`
}

// SyncParams are the VMs running when the daemon started.
type SyncParams struct {
	Running []Attachment `json:"running"`
}

// SyncResult says what Sync removed.
type SyncResult struct {
	Removed []string `json:"removed"`
}

// ResolvedParams are addresses an allow-listed name resolved to.
type ResolvedParams struct {
	ID         string   `json:"id"`
	Addrs      []string `json:"addrs"`
	Ports      []uint16 `json:"ports,omitempty"`
	TTLSeconds int      `json:"ttl_seconds"`
}

// StatusResult is the helper's bridge network.
type StatusResult struct {
	Bridge string `json:"bridge"`
	Prefix string `json:"prefix"`
	Ours   bool   `json:"ours"` // the bridge exists and is this install's
}

// Attempt is a logged connection (hostnet.Attempt on the wire).
type Attempt struct {
	VM      string `json:"vm"`
	Time    int64  `json:"time_ns"`
	Allowed bool   `json:"allowed,omitempty"`
	ToHost  bool   `json:"to_host,omitempty"`
	Proto   string `json:"proto"`
	Dst     string `json:"dst"`
	Port    uint16 `json:"port,omitempty"`
}

// maxLine bounds a line either side reads: a sync of every lease of a
// /8 would not fit, but no banger network holds that many running VMs.
const maxLine = 4 << 20

// readLine reads one newline-terminated line of at most maxLine bytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return nil, fmt.Errorf("a line over %d bytes", maxLine)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// decodeStrict decodes raw into v, refusing fields v does not have.
func decodeStrict(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}
