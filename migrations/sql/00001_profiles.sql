-- +goose Up

-- profiles is the local copy of every Kratos identity this service has seen. Its column names are a public
-- contract: teams query this table directly.
CREATE TABLE profiles (
    identity_id          uuid        PRIMARY KEY,
    schema_id            text        NOT NULL DEFAULT '',
    state                text        NOT NULL DEFAULT '',
    traits               jsonb       NOT NULL DEFAULT '{}',
    metadata_public      jsonb,
    verifiable_addresses jsonb       NOT NULL DEFAULT '[]',
    recovery_addresses   jsonb       NOT NULL DEFAULT '[]',
    -- Derived by the profile mapping (jsonnet/profile.jsonnet) from the identity.
    email                text,
    email_verified       boolean     NOT NULL DEFAULT false,
    phone                text,
    phone_verified       boolean     NOT NULL DEFAULT false,
    name                 text,
    locale               text,
    attributes           jsonb       NOT NULL DEFAULT '{}',
    -- Kratos's creation time of the identity.
    created_at           timestamptz,
    -- Grows by one on every change of this row, tombstoning included; never goes back. The search index
    -- uses it as the document's external version.
    revision             bigint      NOT NULL DEFAULT 1,
    synced_at            timestamptz NOT NULL DEFAULT now(),
    last_login_at        timestamptz,
    login_count          bigint      NOT NULL DEFAULT 0,
    -- A tombstone: the identity is gone from Kratos. Personal data is cleared; the row stays so that no
    -- older event or reconcile snapshot can bring the identity back.
    deleted_at           timestamptz
);

CREATE INDEX profiles_email_idx ON profiles (email) WHERE email IS NOT NULL;
CREATE INDEX profiles_phone_idx ON profiles (phone) WHERE phone IS NOT NULL;

-- hook_events holds one row per distinct webhook delivery. The primary key is the event key: a Kratos retry
-- resends identical bytes for the same hook point and flow, so it hits the same key and makes no new event.
CREATE TABLE hook_events (
    hook        text        NOT NULL,
    flow_id     uuid        NOT NULL,
    body_sha256 bytea       NOT NULL,
    identity_id uuid        NOT NULL,
    -- When the event happened, if the payload says (a login's authentication time).
    occurred_at timestamptz,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- Set by the sync worker in the same transaction that applies the event's effects, so effects that
    -- count (a login) are applied exactly once.
    applied_at  timestamptz,
    PRIMARY KEY (hook, flow_id, body_sha256)
);

CREATE INDEX hook_events_received_at_idx ON hook_events (received_at);
CREATE INDEX hook_events_identity_id_idx ON hook_events (identity_id);

-- +goose Down
DROP TABLE hook_events;
DROP TABLE profiles;
