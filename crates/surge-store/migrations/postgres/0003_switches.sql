-- Degradation switches an operator set by hand.
CREATE TABLE switches (
    name          TEXT    PRIMARY KEY,
    enabled       BOOLEAN NOT NULL,
    reason        TEXT    NOT NULL,
    updated_at_ms BIGINT  NOT NULL
);
