-- 0006 signing key rotation: the token-signing key can be replaced while serving. The row
-- 'current' signs; a rotation moves it to the row 'previous' (retired_at: when it stopped
-- signing), which the JWKS carries, and tokens it signed verify, for a grace period after
-- retired_at. NULL for the current key.
--
-- Released: never edit this file; change the schema in a new migration.
--
-- Portable SQL (SQLite and PostgreSQL).

ALTER TABLE signing_keys ADD COLUMN retired_at BIGINT;
