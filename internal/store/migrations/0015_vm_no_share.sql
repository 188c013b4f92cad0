-- no_share: the VM shares no memory pages with other VMs (a restore
-- maps a private copy of a saved state's memory). 0 for every VM made
-- before: they share within their creator's group.
ALTER TABLE vms ADD COLUMN no_share INTEGER NOT NULL DEFAULT 0;
