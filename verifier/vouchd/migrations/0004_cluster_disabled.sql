-- 0004 cluster disabled: a cluster can be disabled without deleting it; its hosts are then not
-- attested and get no keys. NULL while enabled.
--
-- Released: never edit this file; change the schema in a new migration.
--
-- Portable SQL (SQLite and PostgreSQL).

ALTER TABLE clusters ADD COLUMN disabled_at BIGINT;
