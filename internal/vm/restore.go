package vm

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/agent/client"
	"github.com/bangerdev/banger/internal/agent/proto"
	"github.com/bangerdev/banger/internal/boot"
	"github.com/bangerdev/banger/internal/store"
	"github.com/bangerdev/banger/internal/vmm"
)

// restoreVMM starts rec's VMM from the state in dir, on its network:
// the VMM is recorded (rec's pid, put in the store) as soon as it runs,
// whatever the record's state, so a daemon that dies mid-restore leaves
// a pid the next one ends (Reconcile). A failure leaves no tap.
func (s *Service) restoreVMM(ctx context.Context, phase func(string), rec *store.VM, img api.Image, k api.Kernel, dir string) (vmm.Instance, error) {
	sn, err := s.snapshotter()
	if err != nil {
		return nil, err
	}
	phase("network")
	tap, err := s.attach(*rec)
	if err != nil {
		return nil, err
	}
	spec, err := s.spec(*rec, img, k, tap)
	if err == nil {
		err = os.MkdirAll(spec.Dir, 0o700)
	}
	if err != nil {
		s.detach(*rec)
		return nil, err
	}
	phase("restoring")
	in, err := sn.Restore(ctx, spec, dir, func(in vmm.Instance) error {
		id := in.ID()
		rec.PID, rec.PIDStart = id.PID, id.StartTime
		return s.put(ctx, *rec)
	})
	if err != nil {
		s.detach(*rec)
		return nil, err
	}
	return in, nil
}

// identify gives the guest of rec, just restored from a saved state, its
// VM's identity: the clock, a reseeded random pool, its machine-id,
// hostname, MAC and address, banger's SSH key, and with newHostKey a
// host key of its own, which known_hosts then records.
func (s *Service) identify(ctx context.Context, rec store.VM, c *client.Client, newHostKey bool) error {
	v := c.Protocol() // WaitAgent pinged it
	if v == 0 {
		ping, err := c.Ping(ctx)
		if err != nil {
			return fmt.Errorf("vm %s: reaching its agent: %w", rec.Name, err)
		}
		v = proto.PingProtocol(ping)
	}
	if v < proto.IdentityProtocol {
		return fmt.Errorf("vm %s: its agent speaks protocol %d and cannot take a new identity (%d): restart it to give it this release's agent (`banger vm restart %s`)", rec.Name, v, proto.IdentityProtocol, rec.Name)
	}
	params, _, err := s.bootParams(rec, "")
	if err != nil {
		return err
	}
	entropy := make([]byte, 64)
	if _, err := rand.Read(entropy); err != nil {
		return err
	}
	p := proto.IdentityParams{Boot: strings.Join(params.Args(), " "), UnixNano: time.Now().UnixNano(),
		Entropy: entropy, MachineID: params.MachineID, NewHostKey: newHostKey}
	var r proto.IdentityResult
	if err := c.Call(ctx, proto.MethodIdentity, p, &r); err != nil {
		return fmt.Errorf("vm %s: giving its guest its identity: %w", rec.Name, err)
	}
	if s.cfg.SSH.KnownHostsFile != "" {
		return s.recordHostKey(rec.Name, r.SSHHostKey)
	}
	return nil
}

// startFrom runs rec (locked, recorded, its work disk in place) from the
// state saved in dir instead of booting it: its VMM is recorded as soon
// as it runs (a daemon that dies now leaves a pid the next one ends),
// its agent is given rec's identity, and the record then says running.
// A failure leaves no process behind and the state as it was.
func (s *Service) startFrom(ctx context.Context, phase func(string), rec store.VM, img api.Image, k api.Kernel, dir string, newHostKey bool) (store.VM, error) {
	start := time.Now()
	in, err := s.restoreVMM(ctx, phase, &rec, img, k, dir)
	if err != nil {
		rec.PID, rec.PIDStart = 0, 0
		return rec, err
	}
	restored := time.Since(start)
	kill := func() {
		_ = in.Process().Kill()
		<-in.Done()
		s.detach(rec)
		rec.PID, rec.PIDStart = 0, 0
	}
	phase("taking its identity")
	wctx, cancel := context.WithTimeout(ctx, min(time.Minute, s.cfg.BootTimeout))
	defer cancel()
	c, err := boot.WaitAgent(wctx, in.DialAgent, in.Done())
	if err != nil {
		kill()
		return rec, fmt.Errorf("restoring: its agent: %w; %s", err, boot.Failure(in, s.cfg.Driver.Name()))
	}
	answered := time.Since(start)
	if err := s.identify(wctx, rec, c, newHostKey); err != nil {
		c.Close()
		kill()
		return rec, err
	}
	s.cfg.Log.Info("vm started from a saved state", "vm", rec.Name, "restored", restored.Round(time.Millisecond),
		"agent", answered.Round(time.Millisecond), "identity", time.Since(start).Round(time.Millisecond))
	rec.State, rec.Reason, rec.StartedAt, rec.StoppedAt = api.VMRunning, "", time.Now(), time.Time{}
	if err := s.put(ctx, rec); err != nil {
		c.Close()
		kill()
		return rec, err
	}
	s.watch(rec, in, c)
	return rec, nil
}
