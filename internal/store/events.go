package store

import (
	"context"
	"fmt"
	"time"

	"github.com/bangerdev/banger/api"
)

// AddEvents records events, giving each its ID (in order, above every
// ID given before), and drops the oldest beyond keep.
func (t *Tx) AddEvents(ctx context.Context, events []api.Event, keep int) error {
	for i := range events {
		e := &events[i]
		res, err := t.tx.ExecContext(ctx, "INSERT INTO events(time, type, vm, image, reason, detail) VALUES(?, ?, ?, ?, ?, ?)",
			e.Time.UnixNano(), e.Type, e.VM, e.Image, e.Reason, e.Detail)
		if err != nil {
			return fmt.Errorf("recording an event: %w", err)
		}
		if e.ID, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("recording an event: %w", err)
		}
	}
	if len(events) == 0 {
		return nil
	}
	last := events[len(events)-1].ID
	if _, err := t.tx.ExecContext(ctx, "DELETE FROM events WHERE id <= ?", last-int64(keep)); err != nil {
		return fmt.Errorf("dropping old events: %w", err)
	}
	return nil
}

// Events lists the kept events at or after since, oldest first.
func (t *Tx) Events(ctx context.Context, since time.Time) ([]api.Event, error) {
	return all(ctx, t, func(r scanner) (api.Event, error) {
		var e api.Event
		var ns int64
		err := r.Scan(&e.ID, &ns, &e.Type, &e.VM, &e.Image, &e.Reason, &e.Detail)
		e.Time = time.Unix(0, ns)
		return e, err
	}, "events", "SELECT id, time, type, vm, image, reason, detail FROM events WHERE time >= ? ORDER BY id", since.UnixNano())
}
