-- 0007 providers: several key providers per cluster, and the configuration each result used.
-- - cluster_providers: every key provider a cluster is configured with; a host's key request
--   may name any of them. cluster_key_providers (0002) keeps the cluster's default, which is
--   always one of them (the store keeps both tables in step).
-- - clusters.config_generation counts changes to the cluster's attestation configuration (its
--   PCR selection and bank, CA certificates, individual EKs and software versions); triggers
--   raise it in the changing transaction. attestations.config_generation is the value the
--   result was verified against (NULL for results recorded before it was kept), so a result
--   older than the cluster's configuration can be told.
--
-- Released: never edit this file; change the schema in a new migration.
--
-- SQLite's words; 0007_providers.postgres.sql says the same for PostgreSQL (triggers differ).

CREATE TABLE cluster_providers (
    cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    provider TEXT NOT NULL REFERENCES key_providers(name),
    PRIMARY KEY (cluster, provider)
);
INSERT INTO cluster_providers (cluster, provider)
    SELECT cluster, provider FROM cluster_key_providers;
CREATE TRIGGER cluster_providers_insert_config AFTER INSERT ON cluster_providers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_providers_update_config AFTER UPDATE ON cluster_providers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;
CREATE TRIGGER cluster_providers_delete_config AFTER DELETE ON cluster_providers
    BEGIN UPDATE generations SET value = value + 1 WHERE name = 'config'; END;

ALTER TABLE clusters ADD COLUMN config_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attestations ADD COLUMN config_generation BIGINT;
CREATE TRIGGER clusters_selection_generation AFTER UPDATE OF pcrs, bank ON clusters
    WHEN OLD.pcrs IS NOT NEW.pcrs OR OLD.bank IS NOT NEW.bank
    BEGIN UPDATE clusters SET config_generation = config_generation + 1 WHERE name = NEW.name; END;
CREATE TRIGGER cluster_ca_certs_insert_generation AFTER INSERT ON cluster_ca_certs
    BEGIN UPDATE clusters SET config_generation = config_generation + 1 WHERE name = NEW.cluster; END;
CREATE TRIGGER cluster_ca_certs_update_generation AFTER UPDATE ON cluster_ca_certs
    BEGIN UPDATE clusters SET config_generation = config_generation + 1 WHERE name IN (OLD.cluster, NEW.cluster); END;
CREATE TRIGGER cluster_ca_certs_delete_generation AFTER DELETE ON cluster_ca_certs
    BEGIN UPDATE clusters SET config_generation = config_generation + 1 WHERE name = OLD.cluster; END;
CREATE TRIGGER cluster_eks_insert_generation AFTER INSERT ON cluster_eks
    BEGIN UPDATE clusters SET config_generation = config_generation + 1 WHERE name = NEW.cluster; END;
CREATE TRIGGER cluster_eks_update_generation AFTER UPDATE ON cluster_eks
    BEGIN UPDATE clusters SET config_generation = config_generation + 1 WHERE name IN (OLD.cluster, NEW.cluster); END;
CREATE TRIGGER cluster_eks_delete_generation AFTER DELETE ON cluster_eks
    BEGIN UPDATE clusters SET config_generation = config_generation + 1 WHERE name = OLD.cluster; END;
CREATE TRIGGER software_versions_insert_generation AFTER INSERT ON software_versions
    BEGIN UPDATE clusters SET config_generation = config_generation + 1 WHERE name = NEW.cluster; END;
CREATE TRIGGER software_versions_update_generation AFTER UPDATE ON software_versions
    BEGIN UPDATE clusters SET config_generation = config_generation + 1 WHERE name IN (OLD.cluster, NEW.cluster); END;
CREATE TRIGGER software_versions_delete_generation AFTER DELETE ON software_versions
    BEGIN UPDATE clusters SET config_generation = config_generation + 1 WHERE name = OLD.cluster; END;
