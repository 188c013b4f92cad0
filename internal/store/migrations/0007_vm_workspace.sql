-- workspace: the guest directory holding the VM's workspace ("" = none);
-- exec and ssh start there.
ALTER TABLE vms ADD COLUMN workspace TEXT NOT NULL DEFAULT '';
