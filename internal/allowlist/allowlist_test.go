package allowlist

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "github.com", want: "github.com"},
		{in: "GitHub.COM.", want: "github.com"},
		{in: "github.com:443", want: "github.com:443"},
		{in: "deb.debian.org:443,80,80", want: "deb.debian.org:80,443"},
		{in: "*.npmjs.org", want: "*.npmjs.org"},
		{in: " *.npmjs.org:443 ", want: "*.npmjs.org:443"},
		{in: "_acme.example.com", want: "_acme.example.com"},
		{in: "192.0.2.7", want: "192.0.2.7"},
		{in: "192.0.2.7/32:53", want: "192.0.2.7:53"},
		{in: "10.1.2.3/16", want: "10.1.0.0/16"},
		{in: "0.0.0.0/0:443", want: "0.0.0.0/0:443"},
		{in: "", err: "nothing before the ports"},
		{in: ":443", err: "nothing before the ports"},
		{in: "*", err: "use --nat"},
		{in: "a.*.com", err: "'*' is not allowed"},
		{in: "**.com", err: "'*' is not allowed"},
		{in: "github.com:0", err: "not a number from 1 to 65535"},
		{in: "github.com:65536", err: "not a number from 1 to 65535"},
		{in: "github.com:", err: "not a number"},
		{in: "github.com:https", err: "not a number"},
		{in: "fd00::1", err: "only IPv4"},
		{in: "2001:db8::/32", err: "only IPv4"},
		{in: "1.2.3", err: "not an address"},
		{in: "10.0.0.0/33", err: "not an address"},
		{in: "dev.vm", err: "the VMs' own zone"},
		{in: "a..b", err: "1 to 63 characters"},
		{in: strings.Repeat("a", 64) + ".com", err: "1 to 63 characters"},
		{in: strings.Repeat("a.", 127) + "com", err: "at most 253"},
		{in: "bad\x1b[2Jname.com", err: "is not allowed in a name"},
		{in: "x.com:" + strings.Repeat("1,", 40) + "2", err: ""}, // repeats collapse
		{in: "!10.1.2.3/8", want: "!10.0.0.0/8"},
		{in: " ! 192.0.2.7:443,80", want: "!192.0.2.7:80,443"},
		{in: "!0.0.0.0/0", want: "!0.0.0.0/0"},
		{in: "!github.com", err: "not a name"},
		{in: "!*.npmjs.org", err: "not a name"},
		{in: "!", err: "nothing before the ports"},
		{in: "!!10.0.0.0/8", err: "not an address"},
		{in: "!fd00::/8", err: "only IPv4"},
	} {
		r, err := Parse(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !errors.Is(err, ErrRule) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %v, %v; want an error saying %q", tc.in, r, err, tc.err)
			}
		case err != nil:
			if tc.want != "" {
				t.Errorf("Parse(%q): %v", tc.in, err)
			}
		case tc.want != "" && r.String() != tc.want:
			t.Errorf("Parse(%q) = %q; want %q", tc.in, r, tc.want)
		}
	}
	var ports []string
	for i := 1; i <= MaxPorts+1; i++ {
		ports = append(ports, strconv.Itoa(i))
	}
	if _, err := Parse("x.com:" + strings.Join(ports, ",")); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("a rule of %d ports: %v", MaxPorts+1, err)
	}
}

func TestMatch(t *testing.T) {
	l, err := ParseList([]string{"github.com:443", "*.npmjs.org", "api.github.com:80", "10.0.0.0/8:22", "github.com:443"})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Strings(); !slices.Equal(got, []string{"github.com:443", "*.npmjs.org", "api.github.com:80", "10.0.0.0/8:22"}) {
		t.Errorf("list = %v", got)
	}
	for _, tc := range []struct {
		name    string
		ports   []uint16
		anyPort bool
		ok      bool
	}{
		{"github.com", []uint16{443}, false, true},
		{"GITHUB.com.", []uint16{443}, false, true},
		{"api.github.com", []uint16{80}, false, true},
		{"gist.github.com", nil, false, false},
		{"registry.npmjs.org", nil, true, true},
		{"a.b.npmjs.org", nil, true, true},
		{"npmjs.org", nil, false, false},
		{"xnpmjs.org", nil, false, false},
		{"evil.com", nil, false, false},
		{"github.com.evil.com", nil, false, false},
	} {
		ports, anyPort, ok := l.Ports(tc.name)
		if !slices.Equal(ports, tc.ports) || anyPort != tc.anyPort || ok != tc.ok {
			t.Errorf("Ports(%q) = %v, %v, %v; want %v, %v, %v", tc.name, ports, anyPort, ok, tc.ports, tc.anyPort, tc.ok)
		}
	}
	if a := l.Addrs(); len(a) != 1 || a[0].String() != "10.0.0.0/8:22" {
		t.Errorf("Addrs = %v", a)
	}
	if l.Open() || l.Denies() != nil {
		t.Errorf("a list of no deny rule: Open %v, Denies %v", l.Open(), l.Denies())
	}
	many := make([]string, MaxRules+1)
	for i := range many {
		many[i] = "n" + strconv.Itoa(i) + ".example"
	}
	if _, err := ParseList(many); err == nil {
		t.Errorf("a list of %d rules was taken", len(many))
	}
}

// TestOpen: a deny rule makes a list open, its address rules exceptions.
func TestOpen(t *testing.T) {
	l, err := ParseList([]string{"!10.0.0.0/8", "10.1.0.0/16:443", "!192.0.2.7:22", "github.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !l.Open() {
		t.Error("a list with a deny rule is not open")
	}
	if a := l.Addrs().Strings(); !slices.Equal(a, []string{"10.1.0.0/16:443"}) {
		t.Errorf("Addrs = %v", a)
	}
	if d := l.Denies().Strings(); !slices.Equal(d, []string{"!10.0.0.0/8", "!192.0.2.7:22"}) {
		t.Errorf("Denies = %v", d)
	}
	for _, tc := range []struct {
		addr   string
		port   uint16
		denied bool
	}{
		{"10.2.3.4", 80, true},
		{"10.1.3.4", 80, true},
		{"10.1.3.4", 443, false}, // the exception
		{"192.0.2.7", 22, true},
		{"192.0.2.7", 80, false},
		{"203.0.113.1", 22, false},
	} {
		if got := l.Denied(netip.MustParseAddr(tc.addr), tc.port); got != tc.denied {
			t.Errorf("Denied(%s:%d) = %v; want %v", tc.addr, tc.port, got, tc.denied)
		}
	}
}

// FuzzParse: whatever Parse takes, its canonical form reads back as the
// same rule.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"github.com:443", "*.npmjs.org", "10.0.0.0/8:22,80", "192.0.2.7", "x:1", "!10.0.0.0/8:22"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Parse(r.String())
		if err != nil || back.String() != r.String() {
			t.Fatalf("Parse(%q) = %q, which reads back as %q, %v", s, r, back, err)
		}
	})
}
