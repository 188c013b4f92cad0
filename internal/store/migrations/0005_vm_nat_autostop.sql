-- nat: a user-mode VM may open connections out (opt-in); auto_stop: how
-- long it may stay idle before it is stopped ("" = the config's default,
-- "0" = never).
ALTER TABLE vms ADD COLUMN nat INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vms ADD COLUMN auto_stop TEXT NOT NULL DEFAULT '';
