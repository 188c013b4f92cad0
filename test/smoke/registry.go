package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry starts a CNCF distribution registry for this scenario on
// 127.0.0.1 and returns its host:port. It stops with the scenario.
func (t *T) Registry() string { return t.registry("", "") }

// AuthRegistry is Registry behind basic auth for user:password.
func (t *T) AuthRegistry(user, password string) string { return t.registry(user, password) }

func (t *T) registry(user, password string) string {
	if t.tools.registry == "" {
		t.Fatalf("no registry binary; run `make deps` (it builds .tools/registry)")
	}
	dir, err := os.MkdirTemp("", "bs-reg-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.defer_(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("%v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "config.yml")
	body := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	if user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("%v", err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatalf("%v", err)
		}
		body += fmt.Sprintf("auth:\n  htpasswd:\n    realm: smoke\n    path: %s\n", htpasswd)
	}
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatalf("%v", err)
	}
	cmd := exec.Command(t.tools.registry, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the registry: %v", err)
	}
	t.defer_(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	if t.netns != "" {
		t.forwardIntoNetns(addr) // for the daemon inside the namespace
	}
	t.Eventually("registry answers on "+addr, time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(t.ctx, 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK || (user != "" && resp.StatusCode == http.StatusUnauthorized)
	})
	return addr
}

// Push uploads img to ref on a test registry.
func (t *T) Push(ref string, img v1.Image, opts ...remote.Option) {
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := remote.Write(tag, img, append(opts, remote.WithContext(t.ctx))...); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}
