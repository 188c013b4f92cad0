-- init: what runs as the VM's PID 1: "" banger's agent, "image" the
-- image's own init (systemd), the agent its service.
ALTER TABLE vms ADD COLUMN init TEXT NOT NULL DEFAULT '';
