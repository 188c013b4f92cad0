-- kernels are imported kernel bundles, one row per name; a bundle's files
-- live under kernels/<id hex>, shared by names of the same bundle.
CREATE TABLE kernels (
    name       TEXT PRIMARY KEY,
    id         TEXT NOT NULL,    -- sha256 of the bundle manifest
    version    TEXT NOT NULL,    -- uname -r
    source     TEXT NOT NULL,    -- deb, debian, files, pull
    origin     TEXT NOT NULL,    -- the package, file or reference it came from
    size       INTEGER NOT NULL, -- bytes on disk
    modules    INTEGER NOT NULL, -- module files in the bundle
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX kernels_id ON kernels(id);
