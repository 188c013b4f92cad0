package egress

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/hostnet"
)

const id = "0123456789abcdef0123456789abcdef"

func testService(t *testing.T, egress string, max int64) (*Service, string) {
	dir := t.TempDir()
	vmDir := filepath.Join(dir, id)
	if err := os.Mkdir(vmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := New(Config{
		Find: func(_ context.Context, name string) (Target, error) {
			switch name {
			case "dev":
				if _, err := os.Stat(vmDir); err != nil {
					return Target{}, api.ErrNotFound
				}
				return Target{ID: id, Network: api.NetworkBridge}, nil
			case "user":
				return Target{ID: "u", Network: api.NetworkUser}, nil
			}
			return Target{}, fmt.Errorf("vm %q: %w", name, api.ErrNotFound)
		},
		Dir:      func(string) string { return vmDir },
		Egress:   func(context.Context, string) (string, []string) { return egress, nil },
		Deny:     []netip.Prefix{netip.MustParsePrefix("100.100.100.200/32")},
		MaxBytes: max,
	})
	return s, vmDir
}

func attempt(allowed bool, proto, dst string, port uint16, at time.Time) hostnet.Attempt {
	return hostnet.Attempt{VM: id, Time: at, Allowed: allowed, Proto: proto, Dst: netip.MustParseAddr(dst), Port: port}
}

func events(t *testing.T, s *Service) []api.EgressEvent {
	t.Helper()
	var out []api.EgressEvent
	if _, err := s.Events(context.Background(), api.VMEgressParams{Name: "dev"}, func(e api.EgressEvent) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDenyRuleReason: a denial by a deny rule of an open list says so;
// one its list does not explain says the list.
func TestDenyRuleReason(t *testing.T) {
	s, _ := testService(t, api.EgressAllowList, 0)
	s.cfg.Egress = func(context.Context, string) (string, []string) {
		return api.EgressAllowList, []string{"!198.51.100.0/24", "198.51.100.7:53"}
	}
	t0 := time.Now()
	s.Attempt(attempt(false, "tcp", "198.51.100.9", 80, t0))
	s.Attempt(attempt(false, "udp", "198.51.100.7", 53, t0))
	s.Attempt(attempt(false, "tcp", "169.254.169.254", 80, t0))
	var reasons []string
	for _, e := range events(t, s) {
		reasons = append(reasons, e.Dest+" "+e.Reason)
	}
	if want := []string{"198.51.100.9 " + api.ReasonDenyRule, "198.51.100.7 " + api.ReasonAllowList,
		"169.254.169.254 " + api.ReasonLinkLocal}; !slices.Equal(reasons, want) {
		t.Errorf("reasons %q; want %q", reasons, want)
	}
}

func TestLogAndSuggest(t *testing.T) {
	s, _ := testService(t, api.EgressAllowList, 0)
	var denied []string // what the daemon's events are told
	s.cfg.Denied = func(vm string, e api.EgressEvent) { denied = append(denied, vm+" "+e.Dest+e.Name) }
	t0 := time.Now()
	s.DNS(id, api.EgressEvent{Time: t0, Kind: api.EgressDNS, Verdict: api.EgressAllowed, Name: "github.com", Type: "A", Answers: []string{"192.0.2.10"}})
	s.DNS(id, api.EgressEvent{Time: t0, Kind: api.EgressDNS, Verdict: api.EgressDenied, Reason: api.ReasonAllowList, Name: "Registry.npmjs.org", Type: "A"})
	s.DNS(id, api.EgressEvent{Time: t0, Kind: api.EgressDNS, Verdict: api.EgressDenied, Reason: api.ReasonAllowList, Name: "bad\x1bname", Type: "A"})
	s.Attempt(attempt(true, "tcp", "192.0.2.10", 443, t0))
	s.Attempt(attempt(true, "tcp", "192.0.2.10", 443, t0.Add(time.Second))) // a retry: folded
	s.Attempt(attempt(false, "tcp", "192.0.2.10", 22, t0.Add(time.Second)))
	s.Attempt(attempt(false, "udp", "198.51.100.7", 53, t0))
	s.Attempt(attempt(false, "icmp", "198.51.100.8", 0, t0))
	s.Attempt(attempt(false, "tcp", "169.254.169.254", 80, t0))
	s.Attempt(attempt(false, "tcp", "100.100.100.200", 80, t0))
	s.Attempt(hostnet.Attempt{VM: id, Time: t0, ToHost: true, Proto: "tcp", Dst: netip.MustParseAddr("10.203.0.1"), Port: 8080})
	s.Attempt(attempt(true, "tcp", "192.0.2.10", 443, t0.Add(3*time.Second)))  // a retry: folded
	s.Attempt(attempt(true, "tcp", "192.0.2.10", 443, t0.Add(11*time.Second))) // later: kept
	// An ID that is not one names no log: nothing is written.
	s.Attempt(hostnet.Attempt{VM: "../../etc/cron.d/x", Time: t0, Proto: "tcp", Dst: netip.MustParseAddr("192.0.2.9"), Port: 1})
	s.DNS("../x", api.EgressEvent{Time: t0, Kind: api.EgressDNS, Verdict: api.EgressAllowed, Name: "evil.example"})
	got := events(t, s)
	var lines []string
	for _, e := range got {
		lines = append(lines, fmt.Sprintf("%s %s %s %s:%d %s %s", e.Kind, e.Verdict, e.Proto, e.Dest, e.Port, e.Name, e.Reason))
	}
	want := []string{
		"dns allowed  :0 github.com ",
		"dns denied  :0 Registry.npmjs.org not on its allow-list",
		"dns denied  :0 bad\x1bname not on its allow-list",
		"connect allowed tcp 192.0.2.10:443 github.com ",
		"connect denied tcp 192.0.2.10:22 github.com not on its allow-list",
		"connect denied udp 198.51.100.7:53  not on its allow-list",
		"connect denied icmp 198.51.100.8:0  not on its allow-list",
		"connect denied tcp 169.254.169.254:80  link-local (cloud metadata)",
		"connect denied tcp 100.100.100.200:80  network.nat_deny",
		"connect denied tcp 10.203.0.1:8080  the host (only the daemon's DNS is open to VMs)",
		"connect allowed tcp 192.0.2.10:443 github.com ",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if len(denied) != 8 || denied[0] != id+" Registry.npmjs.org" || denied[7] != id+" 10.203.0.1" {
		t.Errorf("told of denials %q", denied)
	}
	s.cfg.Denied = nil
	res, err := s.Suggest(context.Background(), api.VMRefParams{Name: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Allow, []string{"github.com:22,443", "198.51.100.7:53", "198.51.100.8", "registry.npmjs.org"}) {
		t.Errorf("suggested %q", res.Allow)
	}
	if len(res.Never) != 3 || !strings.Contains(res.Never[2], "10.203.0.1:8080") {
		t.Errorf("never %q", res.Never)
	}

	// A restarted daemon knows the names again from the log.
	s2 := New(s.cfg)
	s2.Attempt(attempt(false, "tcp", "192.0.2.10", 80, t0.Add(time.Minute)))
	if all := events(t, s2); all[len(all)-1].Name != "github.com" {
		t.Errorf("after a restart, the last event is %+v; want its name from the log", all[len(all)-1])
	}
	// Other networks have no egress log.
	if _, err := s.Suggest(context.Background(), api.VMRefParams{Name: "user"}); err == nil || !strings.Contains(err.Error(), "only bridge VMs") {
		t.Errorf("suggest for a user-mode VM: %v", err)
	}
}

// TestLogIsCapped: a VM that tries a new destination as fast as the
// firewall logs leaves at most the cap on the host.
func TestLogIsCapped(t *testing.T) {
	const max = 64 << 10
	s, dir := testService(t, api.EgressSandbox, max)
	t0 := time.Now()
	for i := range 20000 {
		s.Attempt(attempt(false, "tcp", "198.51.100.7", uint16(i%60000+1), t0.Add(time.Duration(i)*time.Millisecond)))
	}
	var total int64
	for _, f := range []string{LogName, LogName + ".1"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
			total += fi.Size()
		}
	}
	if total > max || total < max/4 {
		t.Errorf("the log takes %d bytes for a cap of %d", total, max)
	}
	if got := events(t, s); len(got) < 100 || got[len(got)-1].Port != 20000 {
		t.Errorf("%d events kept, the last %+v; want the newest", len(got), got[len(got)-1])
	}
}

func TestFollow(t *testing.T) {
	s, dir := testService(t, api.EgressSandbox, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var got []int
	done := make(chan error, 1)
	go func() {
		_, err := s.Events(ctx, api.VMEgressParams{Name: "dev", Follow: true}, func(e api.EgressEvent) error {
			mu.Lock()
			got = append(got, e.Port)
			mu.Unlock()
			return nil
		})
		done <- err
	}()
	for i := 1; i <= 3; i++ {
		s.Attempt(attempt(false, "tcp", "198.51.100.7", uint16(i), time.Now()))
		for {
			mu.Lock()
			n := len(got)
			mu.Unlock()
			if n == i {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("follow saw %v of %d", got, i)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Deleted: the follower ends, and nothing is written again.
	s.Forget(id)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
	s.Attempt(attempt(false, "tcp", "198.51.100.7", 9, time.Now()))
	if _, err := os.Stat(dir); err == nil {
		t.Error("an attempt after the delete made the VM's directory again")
	}
}
