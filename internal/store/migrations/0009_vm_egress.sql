-- isolate: the VM reaches no other VM on the bridge, nor they it;
-- allow: its egress allow-list, canonical rules one per line ("" = none:
-- nat alone decides).
ALTER TABLE vms ADD COLUMN isolate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vms ADD COLUMN allow TEXT NOT NULL DEFAULT '';
