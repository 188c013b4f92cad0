-- idle_action: what auto-stop does to an idle VM: "" the config's
-- (auto_idle_action), "stop" or "suspend".
ALTER TABLE vms ADD COLUMN idle_action TEXT NOT NULL DEFAULT '';
