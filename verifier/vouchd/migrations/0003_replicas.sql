-- 0003 replicas: what several vouchd sharing one database agree on.
-- - signing_keys: the token-signing key every replica signs with (PKCS#8, sealed under the
--   key-encryption key), so that any replica's JWKS verifies any replica's token.
-- - sweeps: one row per sweeper period, claimed by the replica that sweeps it, so that the
--   expiry sweep runs once per period whatever the number of replicas.
-- - generations: 'config' counts changes to the configuration (principals, management
--   servers, clusters and their trust configuration, hosts added or removed, key servers and
--   providers). Triggers bump it in the changing transaction, so a replica that caches
--   configuration sees a new value exactly when a change has committed.
--
-- Released: never edit this file; change the schema in a new migration.
--
-- SQLite's words; 0003_replicas.postgres.sql says the same for PostgreSQL (triggers differ).

CREATE TABLE signing_keys (
    id TEXT PRIMARY KEY,
    sealed_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE sweeps (
    period BIGINT PRIMARY KEY,
    replica TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE TABLE generations (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO generations (name, value) VALUES ('config', 0);
CREATE TRIGGER principals_insert_config AFTER INSERT ON principals
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER principals_update_config AFTER UPDATE ON principals
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER principals_delete_config AFTER DELETE ON principals
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER group_members_insert_config AFTER INSERT ON group_members
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER group_members_update_config AFTER UPDATE ON group_members
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER group_members_delete_config AFTER DELETE ON group_members
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER tokens_insert_config AFTER INSERT ON tokens
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER tokens_update_config AFTER UPDATE ON tokens
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER tokens_delete_config AFTER DELETE ON tokens
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER management_servers_insert_config AFTER INSERT ON management_servers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER management_servers_update_config AFTER UPDATE ON management_servers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER management_servers_delete_config AFTER DELETE ON management_servers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER clusters_insert_config AFTER INSERT ON clusters
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER clusters_update_config AFTER UPDATE ON clusters
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER clusters_delete_config AFTER DELETE ON clusters
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_ca_certs_insert_config AFTER INSERT ON cluster_ca_certs
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_ca_certs_update_config AFTER UPDATE ON cluster_ca_certs
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_ca_certs_delete_config AFTER DELETE ON cluster_ca_certs
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_eks_insert_config AFTER INSERT ON cluster_eks
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_eks_update_config AFTER UPDATE ON cluster_eks
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_eks_delete_config AFTER DELETE ON cluster_eks
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER software_versions_insert_config AFTER INSERT ON software_versions
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER software_versions_update_config AFTER UPDATE ON software_versions
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER software_versions_delete_config AFTER DELETE ON software_versions
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER key_servers_insert_config AFTER INSERT ON key_servers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER key_servers_update_config AFTER UPDATE ON key_servers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER key_servers_delete_config AFTER DELETE ON key_servers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER key_providers_insert_config AFTER INSERT ON key_providers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER key_providers_update_config AFTER UPDATE ON key_providers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER key_providers_delete_config AFTER DELETE ON key_providers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_key_providers_insert_config AFTER INSERT ON cluster_key_providers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_key_providers_update_config AFTER UPDATE ON cluster_key_providers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_key_providers_delete_config AFTER DELETE ON cluster_key_providers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER hosts_insert_config AFTER INSERT ON hosts
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER hosts_delete_config AFTER DELETE ON hosts
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER hosts_update_config AFTER UPDATE OF cluster, name, ak_public ON hosts
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
