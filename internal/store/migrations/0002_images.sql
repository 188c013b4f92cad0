-- images are the root file systems banger built, one row per name. Names
-- of the same image (same config digest) share one rootfs, stored by id.
CREATE TABLE images (
    name        TEXT PRIMARY KEY,
    id          TEXT NOT NULL,  -- config digest: what the rootfs is built from
    digest      TEXT NOT NULL,  -- manifest digest ('' for a docker-archive import)
    repo_digest TEXT NOT NULL,  -- what the name resolved to, when that was an index
    platform    TEXT NOT NULL,
    config      BLOB NOT NULL,  -- the image's OCI config file
    layers      INTEGER NOT NULL,
    size        INTEGER NOT NULL, -- bytes of the rootfs image
    source      TEXT NOT NULL,  -- pull or import
    created_at  TEXT NOT NULL
) STRICT;
CREATE INDEX images_id ON images(id);
