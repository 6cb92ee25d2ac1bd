-- 0007 providers: several key providers per cluster, and the configuration each result used.
-- The same tables, columns and meaning as 0007_providers.sql, in PostgreSQL's words.
--
-- Released: never edit this file; change the schema in a new migration.

CREATE TABLE cluster_providers (
    cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    provider TEXT NOT NULL REFERENCES key_providers(name),
    PRIMARY KEY (cluster, provider)
);
INSERT INTO cluster_providers (cluster, provider)
    SELECT cluster, provider FROM cluster_key_providers;
CREATE TRIGGER cluster_providers_config AFTER INSERT OR UPDATE OR DELETE ON cluster_providers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_config_generation();

ALTER TABLE clusters ADD COLUMN config_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attestations ADD COLUMN config_generation BIGINT;
CREATE FUNCTION bump_cluster_selection_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.pcrs IS DISTINCT FROM OLD.pcrs OR NEW.bank IS DISTINCT FROM OLD.bank THEN
        NEW.config_generation := OLD.config_generation + 1;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER clusters_selection_generation BEFORE UPDATE ON clusters
    FOR EACH ROW EXECUTE FUNCTION bump_cluster_selection_generation();
CREATE FUNCTION bump_cluster_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE clusters SET config_generation = config_generation + 1 WHERE name = OLD.cluster;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        UPDATE clusters SET config_generation = config_generation + 1 WHERE name = NEW.cluster;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER cluster_ca_certs_generation AFTER INSERT OR UPDATE OR DELETE ON cluster_ca_certs
    FOR EACH ROW EXECUTE FUNCTION bump_cluster_generation();
CREATE TRIGGER cluster_eks_generation AFTER INSERT OR UPDATE OR DELETE ON cluster_eks
    FOR EACH ROW EXECUTE FUNCTION bump_cluster_generation();
CREATE TRIGGER software_versions_generation AFTER INSERT OR UPDATE OR DELETE ON software_versions
    FOR EACH ROW EXECUTE FUNCTION bump_cluster_generation();
