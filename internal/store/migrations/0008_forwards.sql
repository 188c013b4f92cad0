-- forwards are loopback listeners carrying connections to a VM's guest
-- port (vm ports --forward), kept so a restarted daemon opens them again.
CREATE TABLE forwards (
    vm_id      TEXT NOT NULL,
    guest_port INTEGER NOT NULL,
    guest_addr TEXT NOT NULL,    -- what the agent dials in the guest
    host_addr  TEXT NOT NULL,    -- the host's 127.0.0.1:port
    PRIMARY KEY (vm_id, guest_port)
) STRICT;
