-- leases are the bridge network's addresses, one per VM that uses it.
-- addr is the primary key, so an address is never handed out twice; a
-- lease lives as long as its VM (freed by DeleteVM), so a VM keeps its
-- address across stop and start.
CREATE TABLE leases (
    addr  TEXT PRIMARY KEY,
    vm_id TEXT NOT NULL UNIQUE
) STRICT;
