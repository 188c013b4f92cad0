-- events are the daemon's recent lifecycle events (banger events), kept
-- bounded: the oldest are dropped as new ones come.
CREATE TABLE events (
    id     INTEGER PRIMARY KEY,   -- grows with time, never reused
    time   INTEGER NOT NULL,      -- unix nanoseconds
    type   TEXT NOT NULL,
    vm     TEXT NOT NULL DEFAULT '',
    image  TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX events_time ON events(time);
