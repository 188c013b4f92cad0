-- vms are the VMs banger manages, one row per name. Their files live in
-- vms/<id> (work disk) and the runtime dir (sockets, console log).
CREATE TABLE vms (
    name       TEXT PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    state      TEXT NOT NULL,    -- creating, running, stopped, failed
    reason     TEXT NOT NULL,    -- why it stopped or failed
    image      TEXT NOT NULL,    -- the image name it was created from
    image_id   TEXT NOT NULL,
    kernel     TEXT NOT NULL,
    kernel_id  TEXT NOT NULL,
    vcpu       INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    disk_size  INTEGER NOT NULL,
    network    TEXT NOT NULL,
    mac        TEXT NOT NULL,
    vmm        TEXT NOT NULL,    -- the driver running it
    pid        INTEGER NOT NULL, -- the VMM's pid and start time (0: none)
    pid_start  INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT NOT NULL,    -- "" when never started
    stopped_at TEXT NOT NULL
) STRICT;
CREATE INDEX vms_image ON vms(image_id);
CREATE INDEX vms_kernel ON vms(kernel_id);
