-- 0005 console: what a host presented with a refused result (so the console can compare it
-- with the accepted versions), and indexes for the console's hosts page (paging and filters
-- at 100,000 hosts), the fleet summary and the filtered event log.
--
-- Released: never edit this file; change the schema in a new migration.
--
-- Portable SQL (SQLite and PostgreSQL).

ALTER TABLE attestations ADD COLUMN presented TEXT;
-- The hosts page lists hosts by LOWER(name), name, ek_hash; each index ends in that order so
-- that a page is read in order and stops at its end, filters and name prefixes included.
CREATE INDEX hosts_by_name ON hosts (LOWER(name), name, ek_hash);
CREATE INDEX hosts_by_cluster_name ON hosts (cluster, LOWER(name), name, ek_hash);
CREATE INDEX hosts_by_cluster_state ON hosts (cluster, state, LOWER(name), name, ek_hash);
CREATE INDEX hosts_by_state ON hosts (state, LOWER(name), name, ek_hash);
CREATE INDEX hosts_by_software_version ON hosts (software_version, LOWER(name), name, ek_hash);
CREATE INDEX hosts_by_valid_until ON hosts (valid_until);
CREATE INDEX events_by_kind ON events (kind, id);
CREATE INDEX events_by_subject ON events (subject, id);
