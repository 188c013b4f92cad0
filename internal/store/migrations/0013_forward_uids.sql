-- the uids that asked for a forward (vm ports --forward), comma-separated:
-- only they and root may connect to it. '' for a forward kept before: the
-- daemon's own user.
ALTER TABLE forwards ADD COLUMN uids TEXT NOT NULL DEFAULT '';
