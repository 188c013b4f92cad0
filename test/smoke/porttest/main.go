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
package main

import (
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
	"os"
	"strconv"
	"time"
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
