package procfs

import (
	"net"
	"os"
	"slices"
	"testing"

	"github.com/bangerdev/banger/internal/agent/proto"
)

func TestCPU(t *testing.T) {
	stat := "cpu  100 5 50 800 20 3 2 1 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\ncpu1 50 3 25 400 10 2 1 1 0 0\nintr 1 2 3\n"
	busy, total, n, err := CPU([]byte(stat))
	if err != nil || busy != 161 || total != 981 || n != 2 {
		t.Fatalf("CPU = %d, %d, %d, %v; want 161, 981, 2", busy, total, n, err)
	}
	for _, bad := range []string{"", "intr 1\n", "cpu 1 2\n", "cpu a b c d e\n"} {
		if _, _, _, err := CPU([]byte(bad)); err == nil {
			t.Errorf("CPU(%q) took it", bad)
		}
	}
}

func TestMemLoadNet(t *testing.T) {
	total, avail, err := Mem([]byte("MemTotal:        2048000 kB\nMemFree:          100 kB\nMemAvailable:    1024000 kB\n"))
	if err != nil || total != 2048000*1024 || avail != 1024000*1024 {
		t.Errorf("Mem = %d, %d, %v", total, avail, err)
	}
	if _, _, err := Mem([]byte("MemTotal: 1 kB\n")); err == nil {
		t.Error("Mem without MemAvailable took it")
	}
	l1, l5, l15, err := Load([]byte("0.50 0.25 0.10 2/120 4242\n"))
	if err != nil || l1 != 0.5 || l5 != 0.25 || l15 != 0.1 {
		t.Errorf("Load = %v %v %v %v", l1, l5, l15, err)
	}
	dev := `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  500     5    0    0    0     0          0         0      500     5    0    0    0     0       0          0
  eth0: 1000    10    0    0    0     0          0         0     2000    20    0    0    0     0       0          0
  eth1:   10     1    0    0    0     0          0         0       20     2    0    0    0     0       0          0
`
	rx, tx, err := NetDev([]byte(dev))
	if err != nil || rx != 1010 || tx != 2020 {
		t.Errorf("NetDev = %d, %d, %v; want 1010, 2020 (lo left out)", rx, tx, err)
	}
}

func TestSockets(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0
   2: 0200000A:0016 0100000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 100 0 0 10 0
`
	got, err := Sockets([]byte(tcp), "tcp")
	if err != nil {
		t.Fatal(err)
	}
	want := []Socket{
		{Socket: proto.Socket{Proto: "tcp", Addr: "0.0.0.0", Port: 22}, Inode: 111},
		{Socket: proto.Socket{Proto: "tcp", Addr: "127.0.0.1", Port: 8080}, Inode: 222},
	}
	if !slices.Equal(got, want) {
		t.Errorf("tcp sockets = %+v; want %+v (the established one left out)", got, want)
	}
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0051 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 445 1 0000000000000000 100 0 0 10 0
`
	got, err = Sockets([]byte(tcp6), "tcp6")
	if err != nil || len(got) != 2 || got[0].Addr != "::" || got[0].Port != 80 || got[1].Addr != "127.0.0.1" {
		t.Errorf("tcp6 sockets = %+v, %v", got, err)
	}
	udp := `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 555 2 0000000000000000 0
  2: 0F02000A:D431 0202000A:0035 01 00000000:00000000 00:00000000 00000000     0        0 556 2 0000000000000000 0
`
	got, err = Sockets([]byte(udp), "udp")
	if err != nil || len(got) != 1 || got[0].Port != 5353 || got[0].Inode != 555 {
		t.Errorf("udp sockets = %+v, %v; want the bound one only", got, err)
	}
	if _, err := Sockets([]byte("h\n 0: zz:0016 00000000:0000 0A a b c d e 1\n"), "tcp"); err == nil {
		t.Error("a bad address was taken")
	}
}

// TestListeningHere reads this machine's own /proc: a socket the test
// opens is found with the test's pid.
func TestListeningHere(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	socks, err := Listening("/proc")
	if err != nil {
		t.Fatal(err)
	}
	tcpPort, udpPort := ln.Addr().(*net.TCPAddr).Port, pc.LocalAddr().(*net.UDPAddr).Port
	var foundTCP, foundUDP bool
	for _, s := range socks {
		if s.PID != os.Getpid() {
			continue
		}
		foundTCP = foundTCP || (s.Proto == "tcp" && s.Port == tcpPort && s.Addr == "127.0.0.1")
		foundUDP = foundUDP || (s.Proto == "udp" && s.Port == udpPort)
	}
	if !foundTCP || !foundUDP {
		t.Fatalf("own sockets tcp:%d udp:%d not found in %+v", tcpPort, udpPort, socks)
	}
	st, err := Stats("/proc", func() (uint64, uint64) { return 1, 2 })
	if err != nil || st.CPUTotal == 0 || st.MemTotal == 0 || st.Procs == 0 || st.Uptime == 0 || st.DiskSize != 2 {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
}

// FuzzParse feeds every parser arbitrary bytes: none may panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte("cpu  1 2 3 4 5 6 7 8\n"))
	f.Add([]byte("h\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1\n"))
	f.Add([]byte("MemTotal: 1 kB\nMemAvailable: 1 kB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _, _ = CPU(b)
		_, _, _ = Mem(b)
		_, _, _, _ = Load(b)
		_, _, _ = NetDev(b)
		for _, table := range []string{"tcp", "udp6"} {
			socks, err := Sockets(b, table)
			for _, s := range socks {
				if err != nil || s.Port < 0 || s.Port > 65535 {
					t.Fatalf("socket %+v with error %v", s, err)
				}
			}
		}
	})
}
