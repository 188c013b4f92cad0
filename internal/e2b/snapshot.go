package e2b

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/bangerdev/banger/api"
)

// A snapshot (POST /sandboxes/{id}/snapshots) is a checkpoint of a
// sandbox's VM kept by a stopped VM of its own (`vm fork --checkpoint
// TAG --stopped`), so it outlives the sandbox; a create that names it
// forks that VM from the checkpoint. E2B names a snapshot as a template:
// "ID:default", or "NAME:default" when it was named.
type snapshot struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	KeyID string `json:"key_id"`
	VM    string `json:"vm"`  // the stopped VM holding it
	Tag   string `json:"tag"` // its checkpoint's tag there
	// Of is the sandbox it was taken of, as it was: a sandbox made from
	// it starts with its template, shape, environment and network.
	Of      sandbox   `json:"of"`
	Created time.Time `json:"created"`
}

// snapshotTag is the one tag a snapshot has, as E2B's do unless built
// with others.
const snapshotTag = "default"

// validSnapshotName: what E2B's template aliases allow.
var validSnapshotName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// handle is how E2B names the snapshot: its name, else its ID, with the
// tag.
func (sn *snapshot) handle() string {
	if sn.Name != "" {
		return sn.Name + ":" + snapshotTag
	}
	return sn.ID + ":" + snapshotTag
}

type snapshotInfo struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

func (sn *snapshot) info() snapshotInfo {
	return snapshotInfo{SnapshotID: sn.handle(), Names: []string{sn.handle()}}
}

// matches says whether ref names sn: its ID or name, with or without
// the tag (and with a namespace before a '/', which is the key's here).
func (sn *snapshot) matches(ref string) bool {
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		ref = ref[i+1:]
	}
	if base, tag, ok := strings.Cut(ref, ":"); ok {
		if tag != snapshotTag {
			return false
		}
		ref = base
	}
	return ref == sn.ID || sn.Name != "" && ref == sn.Name
}

// snapshotOf is c's snapshot ref names.
func (s *Service) snapshotOf(keyID, ref string) (*snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sn := range s.snapshots {
		if sn.KeyID == keyID && sn.matches(ref) {
			cp := *sn
			return &cp, true
		}
	}
	return nil, false
}

// snapshotCreate: POST /sandboxes/{id}/snapshots. The sandbox pauses for
// the checkpoint and runs on; a name taken by one of the key's snapshots
// moves to the new one, and the old one goes.
func (s *Service) snapshotCreate(w http.ResponseWriter, r *http.Request, c caller, sb sandbox) {
	var b struct {
		Name string `json:"name"`
	}
	if err := decodeBody(r, &b); err != nil {
		writeErr(w, err)
		return
	}
	if b.Name != "" {
		if !validSnapshotName.MatchString(b.Name) {
			writeError(w, http.StatusBadRequest, "snapshot name %.100q: letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100", b.Name)
			return
		}
		if _, ok := s.template(b.Name); ok {
			writeError(w, http.StatusConflict, "snapshot name %q is a template's; pick another", b.Name)
			return
		}
	}
	if sb.Paused {
		writeError(w, http.StatusConflict, "sandbox %s is paused; connect to it first", sb.ID)
		return
	}
	sn := &snapshot{ID: newSnapshotID(), Name: b.Name, KeyID: c.key.ID, Tag: snapshotTagPrefix + newID()[1:9], Of: sb, Created: s.o.Now().UTC()}
	sn.VM = sn.ID
	ctx := r.Context()
	if _, err := s.o.VMs.SnapshotCreate(ctx, api.VMSnapshotParams{Name: sb.ID, Tag: sn.Tag}); err != nil {
		writeErr(w, fmt.Errorf("snapshotting sandbox %s: %w", sb.ID, err))
		return
	}
	// The sandbox's own checkpoint is only the way to the holder: it
	// goes whatever happens next.
	defer func() {
		if _, err := s.o.VMs.SnapshotDelete(context.WithoutCancel(ctx), api.VMSnapshotParams{Name: sb.ID, Tag: sn.Tag}); err != nil && !errors.Is(err, api.ErrNotFound) {
			s.o.Logger.Warn("e2b: removing a snapshot's checkpoint from its sandbox", "sandbox", sb.ID, "tag", sn.Tag, "err", err)
		}
	}()
	if _, err := s.o.VMs.Fork(ctx, api.VMForkParams{Name: sb.ID, Checkpoint: sn.Tag, Prefix: sn.VM, Stopped: true}); err != nil {
		writeErr(w, fmt.Errorf("keeping the snapshot of sandbox %s: %w", sb.ID, err))
		return
	}
	s.mu.Lock()
	var replaced *snapshot
	if sn.Name != "" {
		for id, o := range s.snapshots {
			if o.KeyID == c.key.ID && o.Name == sn.Name {
				replaced = o
				delete(s.snapshots, id)
			}
		}
	}
	s.snapshots[sn.ID] = sn
	err := s.write(snapshotsFile, s.snapshots)
	s.mu.Unlock()
	if err != nil {
		s.dropHolder(ctx, sn)
		writeErr(w, err)
		return
	}
	if replaced != nil {
		s.dropHolder(ctx, replaced)
	}
	s.o.Logger.Info("e2b snapshot created", "key", c.key.ID, "sandbox", sb.ID, "snapshot", sn.ID, "name", sn.Name)
	s.logf(sb.ID, "info", "snapshot created", "snapshotID", sn.handle())
	writeJSON(w, http.StatusCreated, sn.info())
}

// dropHolder deletes a snapshot's VM; one already gone is fine.
func (s *Service) dropHolder(ctx context.Context, sn *snapshot) {
	if _, err := s.o.VMs.Delete(context.WithoutCancel(ctx), api.VMDeleteParams{Name: sn.VM, Force: true}); err != nil && !errors.Is(err, api.ErrNotFound) {
		s.o.Logger.Warn("e2b: deleting a snapshot's VM", "snapshot", sn.ID, "vm", sn.VM, "err", err)
	}
}

// snapshotList: GET /snapshots[?sandboxID=&name=&limit=&nextToken=], the
// key's snapshots oldest first.
func (s *Service) snapshotList(w http.ResponseWriter, r *http.Request, c caller) {
	q := r.URL.Query()
	from, limit, err := page(q)
	if err != nil {
		writeErr(w, err)
		return
	}
	src, name := q.Get("sandboxID"), q.Get("name")
	s.mu.Lock()
	var l []*snapshot
	for _, sn := range s.snapshots {
		if sn.KeyID == c.key.ID && (src == "" || sn.Of.ID == src) && (name == "" || sn.matches(name)) {
			cp := *sn
			l = append(l, &cp)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(l, func(a, b *snapshot) int {
		if n := a.Created.Compare(b.Created); n != 0 {
			return n
		}
		return strings.Compare(a.ID, b.ID)
	})
	out := []snapshotInfo{}
	for _, sn := range pageOf(w, l, from, limit) {
		out = append(out, sn.info())
	}
	writeJSON(w, http.StatusOK, out)
}

// templateDelete: DELETE /templates/{id}, which is how the SDKs delete a
// snapshot. Templates proper are the owner's (`banger e2b template`).
func (s *Service) templateDelete(w http.ResponseWriter, r *http.Request, c caller) {
	ref := r.PathValue("id")
	sn, ok := s.snapshotOf(c.key.ID, ref)
	if !ok {
		if _, ok := s.template(ref); ok {
			writeError(w, http.StatusForbidden, "template %s is the host's; its owner deletes it (`banger e2b template delete %s`)", ref, ref)
			return
		}
		writeError(w, http.StatusNotFound, "snapshot %q not found", ref)
		return
	}
	if _, err := s.o.VMs.Delete(r.Context(), api.VMDeleteParams{Name: sn.VM, Force: true}); err != nil && !errors.Is(err, api.ErrNotFound) {
		writeErr(w, fmt.Errorf("deleting snapshot %s: %w", sn.handle(), err))
		return
	}
	s.forgetSnapshot(sn.ID)
	s.o.Logger.Info("e2b snapshot deleted", "key", c.key.ID, "snapshot", sn.ID)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) forgetSnapshot(id string) {
	s.mu.Lock()
	delete(s.snapshots, id)
	err := s.write(snapshotsFile, s.snapshots)
	s.mu.Unlock()
	if err != nil {
		s.o.Logger.Warn("e2b: saving state", "err", err)
	}
}

// newSnapshotID is a snapshot's ID (and its VM's name): "s" and 19 of
// [a-z0-9], beside sandboxes' "i".
func newSnapshotID() string {
	id := []byte(newID())
	id[0] = 's'
	return string(id)
}

// snapshotTagPrefix starts the tag of the checkpoint a snapshot takes of
// its sandbox on the way to its own VM.
const snapshotTagPrefix = "e2b-"

// isSnapshotID: "s" and 19 of [a-z0-9] (newSnapshotID).
func isSnapshotID(n string) bool {
	return len(n) == 20 && n[0] == 's' && strings.Trim(n, "abcdefghijklmnopqrstuvwxyz0123456789") == ""
}

// reconcile, before the API serves, clears what a daemon that ended in
// the middle left: a sandbox's checkpoint on the way to a snapshot, a
// snapshot's VM no snapshot names, and records of sandboxes and
// snapshots whose VMs are gone.
func (s *Service) reconcile(ctx context.Context) {
	l, err := s.o.VMs.List(ctx)
	if err != nil {
		s.o.Logger.Warn("e2b: listing VMs to reconcile", "err", err)
		return
	}
	vms := map[string]api.VM{}
	for _, v := range l.VMs {
		vms[v.Name] = v
	}
	s.mu.Lock()
	held := map[string]bool{}
	var goneSnaps, goneSandboxes []string
	for id, sn := range s.snapshots {
		held[sn.VM] = true
		if _, ok := vms[sn.VM]; !ok {
			goneSnaps = append(goneSnaps, id)
		}
	}
	for id := range s.sandboxes {
		if _, ok := vms[id]; !ok {
			goneSandboxes = append(goneSandboxes, id)
		}
	}
	s.mu.Unlock()
	for _, id := range goneSnaps {
		s.forgetSnapshot(id)
	}
	for _, id := range goneSandboxes {
		s.forget(id)
	}
	for _, v := range l.VMs {
		if !strings.HasPrefix(v.Creator, "e2b:") {
			continue
		}
		if isSnapshotID(v.Name) {
			// A snapshot's VM: its checkpoint is the snapshot, kept.
			if !held[v.Name] && v.State == api.VMStopped {
				s.o.Logger.Info("e2b: deleting a snapshot's VM no snapshot names (the daemon ended while making it)", "vm", v.Name)
				s.dropHolder(ctx, &snapshot{ID: v.Name, VM: v.Name})
			}
			continue
		}
		cps, err := s.o.VMs.SnapshotList(ctx, api.VMRefParams{Name: v.Name})
		if err != nil {
			continue
		}
		for _, cp := range cps.Snapshots {
			if strings.HasPrefix(cp.Tag, snapshotTagPrefix) {
				s.o.Logger.Info("e2b: deleting a snapshot's way station", "vm", v.Name, "tag", cp.Tag)
				if _, err := s.o.VMs.SnapshotDelete(ctx, api.VMSnapshotParams{Name: v.Name, Tag: cp.Tag}); err != nil {
					s.o.Logger.Warn("e2b: deleting a checkpoint", "vm", v.Name, "tag", cp.Tag, "err", err)
				}
			}
		}
	}
}
