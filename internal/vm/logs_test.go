package vm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

func TestLogs(t *testing.T) {
	f := newFixture(t)
	v := f.mustCreate("web")
	ctx := context.Background()
	r, err := f.svc.Logs(ctx, api.VMLogsParams{Name: "web"}, nil)
	if err != nil || r.Console != vmmtest.ConsoleBoot {
		t.Fatalf("logs = %q, %v", r.Console, err)
	}
	console := filepath.Join(f.svc.runDir(v.ID), "console.log")
	if err := os.WriteFile(console, []byte("one\ntwo\nthree\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r, _ := f.svc.Logs(ctx, api.VMLogsParams{Name: "web", Tail: 2}, nil); r.Console != "two\nthree\n" {
		t.Fatalf("tail 2 = %q", r.Console)
	}
	// Following: the tail first, then what the console receives.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var got []string
	done := make(chan error, 1)
	go func() {
		_, err := f.svc.Logs(fctx, api.VMLogsParams{Name: "web", Tail: 1, Follow: true}, func(r api.VMLogsResult) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, r.Console)
			if len(got) == 1 {
				fh, _ := os.OpenFile(console, os.O_APPEND|os.O_WRONLY, 0)
				fh.WriteString("four\n")
				fh.Close()
			}
			if strings.Contains(strings.Join(got, ""), "four") {
				cancel()
			}
			return nil
		})
		done <- err
	}()
	select {
	case err := <-done:
		mu.Lock()
		defer mu.Unlock()
		if err != nil || strings.Join(got, "") != "three\nfour\n" {
			t.Fatalf("follow = %q, %v", got, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("following never saw the new line")
	}
	if _, err := f.svc.Logs(ctx, api.VMLogsParams{Name: "nope"}, nil); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("logs of a missing VM = %v", err)
	}
}
