-- 0008 seen_requests index: every signed host operation prunes the replay records older than
-- the replay window (`DELETE FROM seen_requests WHERE seen_at < ?`); without an index on
-- seen_at that is a scan of every record still kept, which made registering 100,000 hosts
-- slow down as the table grew.
--
-- Released: never edit this file; change the schema in a new migration.
--
-- Portable SQL (SQLite and PostgreSQL).

CREATE INDEX seen_requests_by_seen_at ON seen_requests (seen_at);
