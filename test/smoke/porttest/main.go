// Command porttest runs inside smoke-test guests (built static, shipped
// in the test image): the servers `vm ports` must tell apart, and loads
// that `vm stats` must see.
//
//	porttest tls PORT     a TLS server (self-signed) answering HTTP
//	porttest echo PORT    a plain TCP echo server
//	porttest udp PORT     a UDP echo socket
//	porttest burn         one CPU busy until killed
//	porttest alloc MB     MB of memory held (touched) until killed
//	porttest files N DIR  create N small files under DIR, and say how long it took
//	porttest wait PORT    return once 127.0.0.1:PORT accepts connections
//	porttest fetch URL    GET URL, discard the body, print its time to first byte and throughput
//	porttest dns SERVER NAME N  ask SERVER for NAME's A record N times, 25 ms apart (under the
//	                      daemon's per-source rate), print the median latency
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "porttest:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: porttest tls|echo|udp PORT, burn, alloc MB")
	}
	arg := func() string {
		if len(args) < 2 {
			return "0"
		}
		return args[1]
	}
	switch args[0] {
	case "tls":
		cert, err := selfSigned()
		if err != nil {
			return err
		}
		ln, err := tls.Listen("tcp", ":"+arg(), &tls.Config{Certificates: []tls.Certificate{cert}})
		if err != nil {
			return err
		}
		return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello over tls\n") }))
	case "echo":
		ln, err := net.Listen("tcp", ":"+arg())
		if err != nil {
			return err
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	case "udp":
		pc, err := net.ListenPacket("udp", ":"+arg())
		if err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return err
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	case "burn":
		for x := 0; ; x++ {
			_ = x * x
		}
	case "alloc":
		mb, err := strconv.Atoi(arg())
		if err != nil {
			return err
		}
		held := make([]byte, mb<<20)
		for i := range held {
			held[i] = byte(i)
		}
		for {
			time.Sleep(time.Hour)
			_ = held[0]
		}
	case "wait":
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if c, err := net.Dial("tcp", "127.0.0.1:"+arg()); err == nil {
				c.Close()
				return nil
			}
		}
		return fmt.Errorf("nothing listens on port %s after a minute", arg())
	case "fetch":
		return fetch(arg())
	case "dns":
		if len(args) < 4 {
			return fmt.Errorf("usage: porttest dns SERVER NAME N")
		}
		n, err := strconv.Atoi(args[3])
		if err != nil || n < 1 {
			return fmt.Errorf("dns: N %q is not a count", args[3])
		}
		return dnsLatency(args[1], args[2], n)
	case "files":
		n, err := strconv.Atoi(arg())
		if err != nil || len(args) < 3 {
			return fmt.Errorf("usage: porttest files N DIR")
		}
		start := time.Now()
		for i := range n {
			d := fmt.Sprintf("%s/d%03d", args[2], i/500)
			if i%500 == 0 {
				if err := os.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			if err := os.WriteFile(fmt.Sprintf("%s/f%05d.txt", d, i), []byte("x\n"), 0o644); err != nil {
				return err
			}
		}
		fmt.Printf("%d files in %s\n", n, time.Since(start))
		return nil
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

// fetch prints "ttfb_us=T bytes=B mbps=R": from the request's start
// (name resolution and connect included) to the response's first byte,
// and the body's rate after it.
func fetch(url string) error {
	start := time.Now()
	var first time.Time
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(),
		&httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }}), http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Minute}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	took := time.Since(first)
	fmt.Printf("ttfb_us=%d bytes=%d mbps=%.1f\n", first.Sub(start).Microseconds(), n, float64(n)/(1<<20)/took.Seconds())
	return nil
}

// dnsLatency prints "median_us=M" over n A queries for name to server.
func dnsLatency(server, name string, n int) error {
	c, err := net.Dial("udp", net.JoinHostPort(server, "53"))
	if err != nil {
		return err
	}
	defer c.Close()
	q := dnsmessage.Message{Header: dnsmessage.Header{RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	var took []time.Duration
	buf := make([]byte, 1500)
	for i := range n {
		if i > 0 {
			time.Sleep(25 * time.Millisecond)
		}
		q.ID = uint16(i + 1)
		b, err := q.Pack()
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			m, err := c.Read(buf)
			if err != nil {
				return fmt.Errorf("query %d: %w", i, err)
			}
			var p dnsmessage.Parser
			if h, err := p.Start(buf[:m]); err == nil && h.ID == q.ID {
				if h.RCode != dnsmessage.RCodeSuccess {
					return fmt.Errorf("query %d: %v", i, h.RCode)
				}
				break
			}
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	fmt.Printf("median_us=%d\n", took[len(took)/2].Microseconds())
	return nil
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "porttest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
