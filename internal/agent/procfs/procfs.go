// Package procfs reads what the guest agent reports from Linux's /proc:
// CPU, memory, load and network counters, and the listening sockets with
// the processes that hold them. The parsers take bytes, so tests and
// fuzzing feed them files.
package procfs

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangerdev/banger/internal/agent/proto"
)

// ErrFormat means a /proc file did not look as Linux writes it.
var ErrFormat = errors.New("unexpected /proc format")

// CPU sums the aggregate "cpu" line of /proc/stat into busy and total
// ticks, and counts the cpuN lines.
func CPU(stat []byte) (busy, total uint64, ncpu int, err error) {
	found := false
	for line := range bytes.Lines(stat) {
		f := strings.Fields(string(line))
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		if f[0] != "cpu" {
			ncpu++
			continue
		}
		if len(f) < 5 {
			return 0, 0, 0, fmt.Errorf("%w: /proc/stat cpu line %q", ErrFormat, strings.TrimSpace(string(line)))
		}
		// user nice system idle iowait irq softirq steal (guest time is
		// already counted in user).
		for i, s := range f[1:min(len(f), 9)] {
			v, perr := strconv.ParseUint(s, 10, 64)
			if perr != nil {
				return 0, 0, 0, fmt.Errorf("%w: /proc/stat cpu field %q", ErrFormat, s)
			}
			total += v
			if i != 3 && i != 4 { // idle, iowait
				busy += v
			}
		}
		found = true
	}
	if !found {
		return 0, 0, 0, fmt.Errorf("%w: /proc/stat has no cpu line", ErrFormat)
	}
	return busy, total, ncpu, nil
}

// Mem reads MemTotal and MemAvailable from /proc/meminfo, in bytes.
func Mem(meminfo []byte) (total, available uint64, err error) {
	var haveTotal, haveAvail bool
	for line := range bytes.Lines(meminfo) {
		f := strings.Fields(string(line))
		if len(f) < 2 {
			continue
		}
		v, perr := strconv.ParseUint(f[1], 10, 64)
		if perr != nil || v > 1<<50 {
			continue
		}
		switch f[0] {
		case "MemTotal:":
			total, haveTotal = v*1024, true
		case "MemAvailable:":
			available, haveAvail = v*1024, true
		}
	}
	if !haveTotal || !haveAvail {
		return 0, 0, fmt.Errorf("%w: /proc/meminfo lacks MemTotal or MemAvailable", ErrFormat)
	}
	return total, available, nil
}

// Load reads the three load averages of /proc/loadavg.
func Load(loadavg []byte) (l1, l5, l15 float64, err error) {
	f := strings.Fields(string(loadavg))
	if len(f) < 3 {
		return 0, 0, 0, fmt.Errorf("%w: /proc/loadavg %q", ErrFormat, loadavg)
	}
	var v [3]float64
	for i := range v {
		if v[i], err = strconv.ParseFloat(f[i], 64); err != nil {
			return 0, 0, 0, fmt.Errorf("%w: /proc/loadavg %q", ErrFormat, f[i])
		}
	}
	return v[0], v[1], v[2], nil
}

// NetDev sums received and sent bytes of every interface but lo in
// /proc/net/dev.
func NetDev(dev []byte) (rx, tx uint64, err error) {
	for line := range bytes.Lines(dev) {
		name, rest, ok := strings.Cut(string(line), ":")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if name == "lo" || len(f) < 9 {
			continue
		}
		r, err1 := strconv.ParseUint(f[0], 10, 64)
		t, err2 := strconv.ParseUint(f[8], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("%w: /proc/net/dev line for %s", ErrFormat, name)
		}
		rx, tx = rx+r, tx+t
	}
	return rx, tx, nil
}

// Socket is a listening socket and the inode that ties it to a process.
type Socket struct {
	proto.Socket
	Inode uint64
}

// Sockets lists the listening sockets of one /proc/net table (tcp, tcp6,
// udp or udp6, named by table): TCP sockets in LISTEN, UDP sockets bound
// to a port and not connected.
func Sockets(data []byte, table string) ([]Socket, error) {
	udp := strings.HasPrefix(table, "udp")
	var out []Socket
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 10 {
			continue // the header, or a blank
		}
		local, err := parseAddr(f[1])
		if err != nil {
			return nil, err
		}
		remote, err := parseAddr(f[2])
		if err != nil {
			return nil, err
		}
		st := f[3]
		listening := st == "0A" // TCP_LISTEN
		if udp {
			listening = st == "07" && remote.Port() == 0 && local.Port() != 0 // bound, unconnected
		}
		if !listening {
			continue
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s inode %q", ErrFormat, table, f[9])
		}
		out = append(out, Socket{Socket: proto.Socket{Proto: table, Addr: local.Addr().Unmap().String(), Port: int(local.Port())}, Inode: inode})
	}
	return out, nil
}

// parseAddr reads "0100007F:1F90": an address as 32-bit words in the
// kernel's (host) byte order, then the port in hex.
func parseAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || (len(a) != 8 && len(a) != 32) {
		return netip.AddrPort{}, fmt.Errorf("%w: socket address %q", ErrFormat, s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: socket address %q", ErrFormat, s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: socket port %q", ErrFormat, s)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(b[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// Owner is the process holding a socket.
type Owner struct {
	PID  int
	Comm string
}

// Owners maps socket inodes to the processes holding them, from the fd
// directories under procRoot.
func Owners(procRoot string) map[uint64]Owner {
	out := map[uint64]Owner{}
	entries, _ := os.ReadDir(procRoot)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join(procRoot, e.Name())
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		var comm string
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
			if err != nil {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(filepath.Join(dir, "comm"))
				comm = strings.TrimSpace(string(b))
			}
			if _, seen := out[inode]; !seen {
				out[inode] = Owner{PID: pid, Comm: comm}
			}
		}
	}
	return out
}

// Listening lists the guest's listening sockets with their processes.
func Listening(procRoot string) ([]proto.Socket, error) {
	var all []Socket
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6"} {
		b, err := os.ReadFile(filepath.Join(procRoot, "net", table))
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6 in this kernel
		}
		if err != nil {
			return nil, err
		}
		socks, err := Sockets(b, table)
		if err != nil {
			return nil, err
		}
		all = append(all, socks...)
	}
	owners := Owners(procRoot)
	out := make([]proto.Socket, 0, len(all))
	for _, s := range all {
		if o, ok := owners[s.Inode]; ok {
			s.PID, s.Process = o.PID, o.Comm
		}
		out = append(out, s.Socket)
	}
	return out, nil
}

// Stats samples the guest's counters; disk reports the work disk's file
// system.
func Stats(procRoot string, disk func() (used, size uint64)) (proto.StatsResult, error) {
	var r proto.StatsResult
	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(procRoot, name)) }
	b, err := read("stat")
	if err == nil {
		r.CPUBusy, r.CPUTotal, r.NumCPU, err = CPU(b)
	}
	if err != nil {
		return r, err
	}
	if b, err = read("meminfo"); err == nil {
		r.MemTotal, r.MemAvailable, err = Mem(b)
	}
	if err != nil {
		return r, err
	}
	if b, err = read("loadavg"); err == nil {
		r.Load1, r.Load5, r.Load15, err = Load(b)
	}
	if err != nil {
		return r, err
	}
	if b, err = read("net/dev"); err == nil {
		r.NetRx, r.NetTx, err = NetDev(b)
	}
	if err != nil {
		return r, err
	}
	if b, err = read("uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			r.Uptime, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	entries, _ := os.ReadDir(procRoot)
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			r.Procs++
		}
	}
	if disk != nil {
		r.DiskUsed, r.DiskSize = disk()
	}
	return r, nil
}
