-- 0002 key providers: key servers (KMIP), trusted key providers, and each cluster's provider.
--
-- Released: never edit this file; change the schema in a new migration.
--
-- Portable SQL (SQLite and PostgreSQL).

CREATE TABLE key_servers (
    name TEXT PRIMARY KEY,
    endpoints TEXT NOT NULL,
    client_certificate TEXT NOT NULL,
    client_key TEXT NOT NULL,
    ca_certificates TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE key_providers (
    name TEXT PRIMARY KEY,
    key_server TEXT NOT NULL REFERENCES key_servers(name),
    primary_key_id TEXT NOT NULL,
    primary_key_version BIGINT NOT NULL,
    retired_keys TEXT NOT NULL,
    wrapping TEXT NOT NULL,
    refresh_seconds BIGINT NOT NULL,
    lifetime_seconds BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE cluster_key_providers (
    cluster TEXT PRIMARY KEY REFERENCES clusters(name) ON DELETE CASCADE,
    provider TEXT NOT NULL REFERENCES key_providers(name)
);
