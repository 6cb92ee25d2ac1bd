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
-- PostgreSQL's words; 0003_replicas.sql says the same for SQLite.

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
CREATE FUNCTION bump_config_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE generations SET value = value + 1 WHERE name = 'config';
    RETURN NULL;
END;
$$;
CREATE TRIGGER principals_config AFTER INSERT OR UPDATE OR DELETE ON principals
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER group_members_config AFTER INSERT OR UPDATE OR DELETE ON group_members
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER tokens_config AFTER INSERT OR UPDATE OR DELETE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER management_servers_config AFTER INSERT OR UPDATE OR DELETE ON management_servers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER clusters_config AFTER INSERT OR UPDATE OR DELETE ON clusters
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER cluster_ca_certs_config AFTER INSERT OR UPDATE OR DELETE ON cluster_ca_certs
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER cluster_eks_config AFTER INSERT OR UPDATE OR DELETE ON cluster_eks
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER software_versions_config AFTER INSERT OR UPDATE OR DELETE ON software_versions
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER key_servers_config AFTER INSERT OR UPDATE OR DELETE ON key_servers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER key_providers_config AFTER INSERT OR UPDATE OR DELETE ON key_providers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER cluster_key_providers_config AFTER INSERT OR UPDATE OR DELETE ON cluster_key_providers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
CREATE TRIGGER hosts_config AFTER INSERT OR DELETE OR UPDATE OF cluster, name, ak_public ON hosts
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();
