-- +goose Up

-- invites admit registrations while REGISTRATION_MODE=invite: either for one e-mail address (email set) or
-- for whoever holds a code (code_sha256 set; the code itself is shown once at creation and never stored).
CREATE TABLE invites (
    id          uuid        PRIMARY KEY,
    -- Lower-cased. Set for an e-mail-bound invite.
    email       text,
    -- SHA-256 of the normalised code. Set for a code invite. Codes carry 160 random bits, so a plain hash
    -- cannot be reversed by guessing.
    code_sha256 bytea       UNIQUE,
    note        text        NOT NULL DEFAULT '',
    max_uses    integer     NOT NULL CHECK (max_uses >= 1),
    -- Reservations and confirmed redemptions (the rows of invite_redemptions). Only ever changed by a
    -- conditional UPDATE, so concurrent registrations can never take more than max_uses.
    uses        integer     NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CHECK ((email IS NULL) <> (code_sha256 IS NULL))
);

CREATE INDEX invites_email_idx ON invites (email) WHERE email IS NOT NULL;

-- invite_redemptions holds one row per registration an invite admitted. The pre-persist hook reserves it,
-- keyed by the Kratos flow and the address being registered (a Kratos retry of the same call hits the same
-- key and takes no second use); the post-persist hook confirms it with the new identity's id. A reservation
-- left unconfirmed is settled by asking Kratos: confirmed if the identity exists, deleted if not.
CREATE TABLE invite_redemptions (
    flow_id      uuid        NOT NULL,
    address      text        NOT NULL,
    invite_id    uuid        NOT NULL REFERENCES invites (id) ON DELETE CASCADE,
    reserved_at  timestamptz NOT NULL,
    identity_id  uuid,
    confirmed_at timestamptz,
    PRIMARY KEY (flow_id, address)
);

CREATE INDEX invite_redemptions_invite_idx ON invite_redemptions (invite_id);
CREATE INDEX invite_redemptions_identity_idx ON invite_redemptions (identity_id) WHERE identity_id IS NOT NULL;
CREATE INDEX invite_redemptions_unconfirmed_idx ON invite_redemptions (reserved_at) WHERE confirmed_at IS NULL;

-- invite_code_failures records each failed invite-code check by client (an IP address, an IPv6 /64, or a
-- flow when there is no address), so that guessing is limited across every replica. Never the code tried.
CREATE TABLE invite_code_failures (
    client_key text        NOT NULL,
    failed_at  timestamptz NOT NULL
);

CREATE INDEX invite_code_failures_key_idx ON invite_code_failures (client_key, failed_at);
CREATE INDEX invite_code_failures_failed_at_idx ON invite_code_failures (failed_at);

-- +goose Down
DROP TABLE invite_code_failures;
DROP TABLE invite_redemptions;
DROP TABLE invites;
