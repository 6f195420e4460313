-- Settings changed at run time through the admin API (the config centre),
-- as JSON documents by name, re-applied at start-up.
CREATE TABLE runtime_config (
    name          TEXT   PRIMARY KEY,
    value         TEXT   NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
