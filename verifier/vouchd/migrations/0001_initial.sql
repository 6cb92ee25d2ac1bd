-- 0001 initial: principals and tokens, management servers, clusters and their trust
-- configuration, hosts, attestations and events.
--
-- Released: never edit this file; change the schema in a new migration. vouchd records each
-- file's SHA-256 in schema_migrations and refuses a database whose record differs.
--
-- Portable SQL, but for two SQLite-specific types: `BLOB` (PostgreSQL: BYTEA) and
-- `INTEGER PRIMARY KEY`, SQLite's rowid, numbered on insert (PostgreSQL: BIGINT GENERATED
-- BY DEFAULT AS IDENTITY PRIMARY KEY).

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE principals (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE group_members (
    group_name TEXT NOT NULL,
    principal TEXT NOT NULL REFERENCES principals(name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, principal)
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL REFERENCES principals(name) ON DELETE CASCADE,
    hash BLOB NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE management_servers (
    id TEXT PRIMARY KEY,
    certificate BLOB NOT NULL,
    subject TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE seen_requests (
    key TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
CREATE TABLE clusters (
    name TEXT PRIMARY KEY,
    pcrs TEXT NOT NULL,
    bank TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE cluster_ca_certs (
    cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    subject TEXT NOT NULL,
    der BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, id)
);
CREATE TABLE cluster_eks (
    cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    ek_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    der BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, ek_hash)
);
CREATE TABLE software_versions (
    cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    reference TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, name)
);
CREATE TABLE hosts (
    ek_hash TEXT PRIMARY KEY,
    cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    added_by TEXT NOT NULL,
    ak_public BLOB,
    state TEXT NOT NULL,
    attested_at BIGINT,
    valid_until BIGINT,
    software_version TEXT,
    created_at BIGINT NOT NULL,
    last_clock TEXT
);
CREATE INDEX hosts_by_cluster ON hosts (cluster);
CREATE TABLE attestations (
    id INTEGER PRIMARY KEY,
    ek_hash TEXT NOT NULL REFERENCES hosts(ek_hash) ON DELETE CASCADE,
    cluster TEXT NOT NULL,
    at BIGINT NOT NULL,
    attested BOOLEAN NOT NULL,
    software_version TEXT,
    reason TEXT,
    pcr_digest TEXT,
    nonce TEXT,
    valid_until BIGINT,
    token TEXT
);
CREATE INDEX attestations_by_host ON attestations (ek_hash, at);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
