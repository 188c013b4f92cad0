// Command net benchmarks the bridge network's egress paths through a
// real root daemon, in namespaces of its own (test/networld: nothing
// leaves them): a download from a web server "outside" by name, its time
// to first byte (name resolution through the daemon's DNS and connect
// included) and its throughput, from a NAT VM and from an allow-listed
// one (whose DNS answers first go into its firewall's set), beside the
// same download from the host's namespace by address with no VM (the
// floor); and
// the daemon's DNS answer latency, for the NAT VM and the allow-listed
// one, against a query straight to the upstream server from the NAT VM.
// Figures are medians of RUNS; it asserts nothing.
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/bangerdev/banger/bench/benchkit"
	"github.com/bangerdev/banger/test/networld"
)

func main() {
	var o opts
	flag.StringVar(&o.bin, "bin", "bin", "directory of banger and bangerd")
	flag.StringVar(&o.crane, "crane", ".tools/crane", "crane binary")
	flag.IntVar(&o.runs, "runs", 5, "downloads per path")
	flag.IntVar(&o.queries, "queries", 200, "DNS queries per path")
	flag.IntVar(&o.mib, "mib", 32, "size of the download")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "bench-net: %v\n", err)
		os.Exit(1)
	}
}

type opts struct {
	bin, crane         string
	runs, queries, mib int
}

const name = "bench.example"

func run(o opts) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the bridge network needs a root daemon: run as root")
	}
	host, err := networld.NewNS("bn-")
	if err != nil {
		return err
	}
	defer exec.Command("ip", "netns", "delete", host).Run()
	out, err := networld.NewOutside(host)
	if err != nil {
		return err
	}
	defer out.Close()
	blob := make([]byte, o.mib<<20)
	_, _ = rand.Read(blob)
	if err := out.Serve(out.NS, networld.Web+":80", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		_, _ = w.Write(blob)
	})); err != nil {
		return err
	}
	if err := out.DNS(map[string]netip.Addr{name: netip.MustParseAddr(networld.Web)}); err != nil {
		return err
	}
	if err := out.UseResolver(host, networld.Web); err != nil {
		return err
	}

	work, err := os.MkdirTemp("", "bench-net-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cli := benchkit.CLI{Bin: o.bin, Home: filepath.Join(work, "home"), Wrap: []string{"ip", "netns", "exec", host}}
	if err := os.MkdirAll(cli.Home, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cli.Home, "config.toml"), []byte("[network]\nmode = \"bridge\"\ncidr = \"10.88.0.0/24\"\n"), 0o644); err != nil {
		return err
	}
	fmt.Println("preparing the daemon, a kernel and an image...")
	stop, err := cli.Start()
	if err != nil {
		return err
	}
	defer stop()
	if err := cli.ImportPorttest(o.crane, work, "net"); err != nil {
		return err
	}
	common := []string{"--image", "net", "--cpus", "1", "--memory", "512M"}
	// VMs outlive their daemon: whatever happens, they go first.
	defer func() { _ = cli.Run("vm", "delete", "--force", "nat", "list") }()
	if err := cli.Run(append([]string{"vm", "create", "--name", "nat", "--nat"}, common...)...); err != nil {
		return err
	}
	if err := cli.Run(append([]string{"vm", "create", "--name", "list", "--allow", name + ":80"}, common...)...); err != nil {
		return err
	}

	url := "http://" + name + "/"
	type path struct {
		label string
		fetch func() (string, error)
	}
	paths := []path{
		{"host, by address (floor)", func() (string, error) { return hostFetch(host) }},
		{"NAT VM", func() (string, error) { return cli.Output("vm", "exec", "nat", "--", "/bin/porttest", "fetch", url) }},
		{"allow-listed VM", func() (string, error) { return cli.Output("vm", "exec", "list", "--", "/bin/porttest", "fetch", url) }},
	}
	// The paths take turns, run after run: a machine's drift falls on
	// each alike.
	ttfbs, rates := map[string][]time.Duration{}, map[string][]time.Duration{} // MiB/s, as a sortable quantity
	for range o.runs {
		for _, p := range paths {
			line, err := p.fetch()
			if err != nil {
				return fmt.Errorf("%s: %w", p.label, err)
			}
			ttfb, rate, err := parseFetch(line)
			if err != nil {
				return fmt.Errorf("%s: %w", p.label, err)
			}
			ttfbs[p.label] = append(ttfbs[p.label], ttfb)
			rates[p.label] = append(rates[p.label], time.Duration(rate*1000))
		}
	}
	ttfbOf, rateOf := map[string]time.Duration{}, map[string]float64{}
	fmt.Printf("\ndownload of %d MiB by name (median of %d, the paths alternating)\n", o.mib, o.runs)
	fmt.Printf("%-26s  %12s  %12s\n", "path", "first byte", "MiB/s")
	for _, p := range paths {
		ttfbOf[p.label], rateOf[p.label] = benchkit.Median(ttfbs[p.label]), float64(benchkit.Median(rates[p.label]))/1000
		fmt.Printf("%-26s  %12s  %12.1f\n", p.label, ttfbOf[p.label].Round(10*time.Microsecond), rateOf[p.label])
	}
	nat, list := paths[1].label, paths[2].label
	fmt.Printf("allow-list / NAT: first byte %.2fx, throughput %.2fx\n",
		float64(ttfbOf[list])/float64(ttfbOf[nat]), rateOf[list]/rateOf[nat])

	gw := "10.88.0.1"
	q := strconv.Itoa(o.queries)
	dns := []struct{ label, vm, server string }{
		{"straight to the upstream (NAT VM)", "nat", networld.Web},
		{"through the daemon (NAT VM)", "nat", gw},
		{"through the daemon (allow-listed VM)", "list", gw},
	}
	fmt.Printf("\nDNS answer latency in the guest (median of %d queries)\n", o.queries)
	var direct time.Duration
	for i, d := range dns {
		line, err := cli.Output("vm", "exec", d.vm, "--", "/bin/porttest", "dns", d.server, name, q)
		if err != nil {
			return fmt.Errorf("%s: %w", d.label, err)
		}
		m := regexp.MustCompile(`median_us=(\d+)`).FindStringSubmatch(line)
		if m == nil {
			return fmt.Errorf("%s: %q", d.label, line)
		}
		us, _ := strconv.Atoi(m[1])
		took := time.Duration(us) * time.Microsecond
		if i == 0 {
			direct = took
		}
		fmt.Printf("%-38s  %10s  %.2fx\n", d.label, took, float64(took)/float64(direct))
	}
	return nil
}

var fetchLine = regexp.MustCompile(`ttfb_us=(\d+) bytes=(\d+) mbps=([0-9.]+)`)

func parseFetch(line string) (time.Duration, float64, error) {
	m := fetchLine.FindStringSubmatch(line)
	if m == nil {
		return 0, 0, fmt.Errorf("porttest fetch said %q", line)
	}
	us, _ := strconv.Atoi(m[1])
	rate, _ := strconv.ParseFloat(m[3], 64)
	return time.Duration(us) * time.Microsecond, rate, nil
}

// hostFetch downloads from the outside's web server, from the host's
// namespace and by address, as porttest fetch does in a guest.
func hostFetch(ns string) (string, error) {
	c, err := networld.Dial(ns, "tcp", networld.Web+":80")
	if err != nil {
		return "", err
	}
	defer c.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", networld.Web); err != nil {
		return "", err
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil {
		return "", err
	}
	first := time.Now()
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return "", err
	}
	took := time.Since(first)
	return fmt.Sprintf("ttfb_us=%d bytes=%d mbps=%.1f", first.Sub(start).Microseconds(), n+1, float64(n+1)/(1<<20)/took.Seconds()), nil
}
