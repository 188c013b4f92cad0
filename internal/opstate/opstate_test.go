package opstate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestListEmpty(t *testing.T) {
	r := NewRegistry[int](time.Hour, nil)
	got := r.List()
	if got == nil || len(got) != 0 {
		t.Fatalf("List() on an empty registry = %#v, want a non-nil empty slice", got)
	}
}

func TestListIsASnapshot(t *testing.T) {
	r := NewRegistry[string](time.Hour, nil)
	a := r.Insert(context.Background(), "vm.create", "a")
	a.SetProgress(1, 10, "steps")
	r.Insert(context.Background(), "image.pull", "b")

	snap := r.List()
	if len(snap) != 2 {
		t.Fatalf("len(List()) = %d, want 2", len(snap))
	}
	// Mutate everything reachable from the snapshot.
	for i := range snap {
		snap[i].ID = "poisoned"
		snap[i].Kind = "poisoned"
		if snap[i].Progress != nil {
			snap[i].Progress.Done = 999
		}
	}
	snap[0] = Status{}
	snap = append(snap[:0], Status{ID: "x"})
	_ = snap

	again := r.List()
	if len(again) != 2 {
		t.Fatalf("len(List()) after mutation = %d, want 2", len(again))
	}
	for _, st := range again {
		if st.ID == "poisoned" || st.Kind == "poisoned" {
			t.Fatalf("registry was poisoned through the snapshot: %+v", st)
		}
	}
	if st := a.Status(); st.Progress == nil || st.Progress.Done != 1 {
		t.Fatalf("progress after snapshot mutation = %+v, want Done=1", st.Progress)
	}
	if _, ok := r.Get(a.ID()); !ok {
		t.Fatalf("Get(%s) after snapshot mutation: not found", a.ID())
	}
}

func TestLifecycle(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	r := NewRegistry[string](time.Minute, c.now)
	op := r.Insert(context.Background(), "image.pull", "debian")
	st := op.Status()
	if st.Done || st.Err != nil || !st.Started.Equal(c.now()) || !st.Finished.IsZero() {
		t.Fatalf("new op status = %+v", st)
	}
	op.SetPhase("download")
	op.SetProgress(5, 10, "bytes")
	op.SetPhase("flatten")
	if st := op.Status(); st.Phase != "flatten" || st.Progress != nil {
		t.Fatalf("SetPhase must reset progress: %+v", st)
	}
	c.add(3 * time.Second)
	boom := errors.New("boom")
	op.Finish("ignored", boom)
	op.Finish("second", nil) // only the first Finish counts
	select {
	case <-op.Done():
	default:
		t.Fatal("Done not closed after Finish")
	}
	res, err := op.Result()
	if res != "ignored" || !errors.Is(err, boom) {
		t.Fatalf("Result() = %q, %v", res, err)
	}
	st = op.Status()
	if !st.Done || !errors.Is(st.Err, boom) || st.Finished.Sub(st.Started) != 3*time.Second {
		t.Fatalf("finished status = %+v", st)
	}
	if err := op.Cancel(); !errors.Is(err, ErrFinished) {
		t.Fatalf("Cancel after Finish = %v, want ErrFinished", err)
	}
}

func TestCancelStopsWork(t *testing.T) {
	r := NewRegistry[int](time.Hour, nil)
	started := make(chan struct{})
	op := r.Start(context.Background(), "vm.create", "x", func(ctx context.Context, op *Op[int]) (int, error) {
		close(started)
		<-ctx.Done()
		return 0, ctx.Err()
	})
	<-started
	if err := op.Cancel(); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	select {
	case <-op.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("work did not stop after Cancel")
	}
	st := op.Status()
	if !st.Canceled || !errors.Is(st.Err, context.Canceled) {
		t.Fatalf("status after cancel = %+v", st)
	}
}

func TestParentCancelStopsWork(t *testing.T) {
	r := NewRegistry[int](time.Hour, nil)
	parent, cancel := context.WithCancel(context.Background())
	op := r.Start(parent, "vm.create", "x", func(ctx context.Context, _ *Op[int]) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	})
	cancel()
	<-op.Done()
	if _, err := op.Result(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Result after parent cancel = %v", err)
	}
}

func TestWatchSeesEveryChange(t *testing.T) {
	r := NewRegistry[int](time.Hour, nil)
	op := r.Insert(context.Background(), "k", "t")
	st, ch := op.Watch()
	if st.Phase != "" {
		t.Fatalf("phase = %q", st.Phase)
	}
	op.SetPhase("one")
	select {
	case <-ch:
	default:
		t.Fatal("watch channel not closed by SetPhase")
	}
	st, ch = op.Watch()
	if st.Phase != "one" {
		t.Fatalf("phase = %q, want one", st.Phase)
	}
	op.Finish(1, nil)
	<-ch
	if st, _ := op.Watch(); !st.Done {
		t.Fatal("Done not visible after Finish")
	}
}

func TestPrune(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	r := NewRegistry[int](time.Minute, c.now)
	running := r.Insert(context.Background(), "k", "running")
	old := r.Insert(context.Background(), "k", "old")
	old.Finish(1, nil)
	c.add(30 * time.Second)
	recent := r.Insert(context.Background(), "k", "recent")
	recent.Finish(2, nil)

	if n := r.Prune(); n != 0 {
		t.Fatalf("Prune before retention removed %d", n)
	}
	c.add(45 * time.Second) // old finished 75s ago, recent 45s ago
	if n := r.Prune(); n != 1 {
		t.Fatalf("Prune removed %d, want 1", n)
	}
	if _, ok := r.Get(old.ID()); ok {
		t.Fatal("old op survived Prune")
	}
	for _, op := range []*Op[int]{running, recent} {
		if _, ok := r.Get(op.ID()); !ok {
			t.Fatalf("%s pruned too early", op.Status().Target)
		}
	}
	c.add(time.Hour)
	r.Prune()
	if _, ok := r.Get(running.ID()); !ok {
		t.Fatal("a running op was pruned")
	}
}

func TestListOrder(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	r := NewRegistry[int](time.Minute, c.now)
	var want []string
	for i := range 5 {
		want = append(want, r.Insert(context.Background(), "k", fmt.Sprint(i)).ID())
		c.add(time.Second)
	}
	for i, st := range r.List() {
		if st.ID != want[i] {
			t.Fatalf("List()[%d] = %s, want %s (oldest first)", i, st.ID, want[i])
		}
	}
}

// TestConcurrentUse is meant for -race: writers, readers, cancelers and a
// pruner all at once.
func TestConcurrentUse(t *testing.T) {
	r := NewRegistry[int](time.Nanosecond, nil)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				op := r.Start(context.Background(), "k", fmt.Sprint(w), func(ctx context.Context, op *Op[int]) (int, error) {
					op.SetPhase("p")
					op.SetProgress(int64(i), 50, "n")
					return i, nil
				})
				if i%3 == 0 {
					_ = op.Cancel()
				}
				<-op.Done()
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 200 {
				for _, st := range r.List() {
					if op, ok := r.Lookup(st.ID); ok {
						_, _ = op.Watch()
					}
				}
				r.Prune()
			}
		})
	}
	wg.Wait()
}

func TestIDsAreUnique(t *testing.T) {
	r := NewRegistry[int](time.Hour, nil)
	seen := map[string]bool{}
	for range 10000 {
		id := r.Insert(context.Background(), "k", "").ID()
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		seen[id] = true
	}
}

func TestItemsAreCopied(t *testing.T) {
	r := NewRegistry[int](time.Hour, time.Now)
	op := r.Insert(context.Background(), "image.pull", "x")
	items := []Item{{Name: "a", Done: 1, Total: 4}, {Name: "b", Done: 2, Total: 6}}
	op.SetItems(items, "bytes")
	items[0].Done = 99 // the caller's slice is not the op's
	st := op.Status()
	if st.Progress.Done != 3 || st.Progress.Total != 10 || st.Progress.Items[0].Done != 1 {
		t.Fatalf("progress = %+v", st.Progress)
	}
	st.Progress.Items[1].Done = 42 // nor is a snapshot's
	if again := r.List()[0]; again.Progress.Items[1].Done != 2 {
		t.Fatalf("snapshot mutation leaked: %+v", again.Progress)
	}
}

// OnFailed hears of each failure once, before Done; not of successes or
// cancels.
func TestOnFailed(t *testing.T) {
	r := NewRegistry[string](time.Hour, nil)
	var told []Status
	r.OnFailed(func(st Status) {
		told = append(told, st) // Finish runs it on the finishing goroutine, before Done
	})
	cases := []struct {
		name string
		err  error
		told bool
	}{
		{"success", nil, false},
		{"failure", errors.New("boom"), true},
		{"cancel", context.Canceled, false},
	}
	for _, c := range cases {
		op := r.Start(context.Background(), "image.pull", c.name, func(context.Context, *Op[string]) (string, error) {
			return "", c.err
		})
		<-op.Done()
		op.Finish("", errors.New("again")) // ignored, told nothing
		last := len(told) > 0 && told[len(told)-1].Target == c.name
		if last != c.told {
			t.Errorf("%s: told = %v", c.name, last)
		}
	}
	if len(told) != 1 || !told[0].Done || told[0].Kind != "image.pull" || told[0].Err == nil {
		t.Fatalf("told %+v", told)
	}
}
