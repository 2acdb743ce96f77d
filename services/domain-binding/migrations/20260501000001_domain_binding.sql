-- Domain binding's own tables beside its event store.

-- One row per license with a binding stream, kept inline with its events.
-- `rev` rises on every change, for the host-check cache.
CREATE SEQUENCE bindings_rev;
CREATE TABLE bindings (
    license_id    uuid        PRIMARY KEY,
    product       text        NOT NULL,
    domain        text,
    changes_used  integer     NOT NULL,
    released      boolean     NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    rev           bigint      NOT NULL DEFAULT nextval('bindings_rev')
);
CREATE INDEX bindings_rev_idx ON bindings (rev);

-- The reservation that makes "one live license per registrable domain and
-- product" hold across aggregates: claimed before the binding event,
-- released after the unbinding one. A claim whose holder never bound the
-- domain (a crash between claim and event) is taken over after a grace
-- period.
CREATE TABLE domain_claims (
    product     text        NOT NULL,
    domain      text        NOT NULL,
    license_id  uuid        NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product, domain)
);
