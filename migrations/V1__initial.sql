-- boxoffice schema, version 1.
--
-- PostgreSQL is the source of truth (ARCHITECTURE.md). Category actors decide in memory; the
-- constraints below are the last line of defence, so a bug in the actors cannot oversell silently.

-- ---------------------------------------------------------------------------------------------
-- Accounts
-- ---------------------------------------------------------------------------------------------

CREATE TABLE users (
    id              BIGSERIAL PRIMARY KEY,
    password_hash   TEXT NOT NULL,
    display_name    TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Logins look a user up by mobile or email through these small tables, never by scanning users.
CREATE TABLE user_mobiles (
    mobile      TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE
);

CREATE TABLE user_emails (
    email       TEXT PRIMARY KEY CHECK (email = lower(email)),
    user_id     BIGINT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE
);

CREATE TABLE roles (
    name        TEXT PRIMARY KEY
);
INSERT INTO roles (name) VALUES ('buyer'), ('admin');

CREATE TABLE user_roles (
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT NOT NULL REFERENCES roles (name),
    PRIMARY KEY (user_id, role)
);

-- Real-name ticket holders. The id number is stored AES-GCM encrypted (key from config); a keyed
-- hash allows "same person" checks without decrypting, and the last four digits allow masking.
CREATE TABLE ticket_buyers (
    id                  BIGSERIAL PRIMARY KEY,
    user_id             BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    id_type             TEXT NOT NULL CHECK (id_type IN ('id_card', 'passport', 'hk_macau_permit', 'taiwan_permit')),
    id_number_enc       BYTEA NOT NULL,
    id_number_hash      BYTEA NOT NULL,
    id_number_last4     TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at          TIMESTAMPTZ
);
CREATE INDEX ticket_buyers_user ON ticket_buyers (user_id) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX ticket_buyers_user_person ON ticket_buyers (user_id, id_type, id_number_hash)
    WHERE deleted_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- Catalog
-- ---------------------------------------------------------------------------------------------

CREATE TABLE areas (
    id      BIGSERIAL PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE
);

CREATE TABLE program_categories (
    id          BIGSERIAL PRIMARY KEY,
    parent_id   BIGINT REFERENCES program_categories (id),
    name        TEXT NOT NULL,
    UNIQUE (parent_id, name)
);

CREATE TABLE programs (
    id                  BIGSERIAL PRIMARY KEY,
    slug                TEXT NOT NULL UNIQUE,
    title               TEXT NOT NULL,
    area_id             BIGINT NOT NULL REFERENCES areas (id),
    category_id         BIGINT NOT NULL REFERENCES program_categories (id),
    venue               TEXT NOT NULL,
    description         TEXT NOT NULL DEFAULT '',
    choose_seats        BOOLEAN NOT NULL DEFAULT TRUE,
    allow_split         BOOLEAN NOT NULL DEFAULT FALSE,
    per_order_limit     INT NOT NULL CHECK (per_order_limit > 0),
    per_account_limit   INT NOT NULL CHECK (per_account_limit >= per_order_limit),
    on_sale_at          TIMESTAMPTZ NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX programs_area ON programs (area_id);
CREATE INDEX programs_category ON programs (category_id);

CREATE TABLE show_times (
    id          BIGSERIAL PRIMARY KEY,
    program_id  BIGINT NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
    starts_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (program_id, starts_at)
);

CREATE TABLE ticket_categories (
    id              BIGSERIAL PRIMARY KEY,
    program_id      BIGINT NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    price_cents     BIGINT NOT NULL CHECK (price_cents >= 0),
    capacity        INT NOT NULL CHECK (capacity > 0),
    seated          BOOLEAN NOT NULL,
    -- Seated layout: rows × seats per row; row 1 is nearest the stage.
    seat_rows       INT CHECK (seat_rows > 0),
    seats_per_row   INT CHECK (seats_per_row > 0),
    sort_order      INT NOT NULL DEFAULT 0,
    UNIQUE (program_id, name),
    CHECK (NOT seated OR (seat_rows IS NOT NULL AND seats_per_row IS NOT NULL
                          AND capacity = seat_rows * seats_per_row))
);

-- One row per seat. `order_no` is set exactly when the seat is held or sold, so a seat row can name
-- at most one order; `seat_claims` below additionally makes tickets unable to share a live seat.
CREATE TABLE seats (
    id                  BIGSERIAL PRIMARY KEY,
    program_id          BIGINT NOT NULL REFERENCES programs (id) ON DELETE CASCADE,
    ticket_category_id  BIGINT NOT NULL REFERENCES ticket_categories (id) ON DELETE CASCADE,
    row_no              INT NOT NULL CHECK (row_no > 0),
    col_no              INT NOT NULL CHECK (col_no > 0),
    price_cents         BIGINT NOT NULL CHECK (price_cents >= 0),
    status              TEXT NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'held', 'sold')),
    order_no            BIGINT,
    hold_expires_at     TIMESTAMPTZ,
    UNIQUE (ticket_category_id, row_no, col_no),
    CHECK ((status = 'available') = (order_no IS NULL)),
    CHECK ((status = 'held') = (hold_expires_at IS NOT NULL))
);
CREATE INDEX seats_category_status ON seats (ticket_category_id, status);
CREATE INDEX seats_order ON seats (order_no) WHERE order_no IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- Orders and tickets, partitioned by the order-number gene.
--
-- order_no's lowest GENE_BITS (= 4) bits equal user_id's, so gene = order_no & 15 = user_id & 15:
-- a lookup by order number and a listing by user both name one partition.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE orders (
    order_no        BIGINT NOT NULL,
    gene            SMALLINT NOT NULL CHECK (gene BETWEEN 0 AND 15),
    user_id         BIGINT NOT NULL REFERENCES users (id),
    program_id      BIGINT NOT NULL REFERENCES programs (id),
    show_time_id    BIGINT REFERENCES show_times (id),
    status          TEXT NOT NULL CHECK (status IN ('pending_payment', 'paid', 'cancelled', 'expired', 'refunded')),
    total_cents     BIGINT NOT NULL CHECK (total_cents >= 0),
    expires_at      TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at         TIMESTAMPTZ,
    closed_at       TIMESTAMPTZ,
    CHECK (gene = (order_no & 15)),
    CHECK (gene = (user_id & 15)),
    PRIMARY KEY (gene, order_no)
) PARTITION BY LIST (gene);
CREATE INDEX orders_user ON orders (gene, user_id, created_at DESC);
CREATE INDEX orders_program ON orders (program_id, status);

CREATE TABLE tickets (
    order_no            BIGINT NOT NULL,
    gene                SMALLINT NOT NULL,
    line_no             SMALLINT NOT NULL,
    user_id             BIGINT NOT NULL,
    program_id          BIGINT NOT NULL,
    ticket_category_id  BIGINT NOT NULL REFERENCES ticket_categories (id),
    ticket_buyer_id     BIGINT NOT NULL REFERENCES ticket_buyers (id),
    seat_id             BIGINT REFERENCES seats (id),
    price_cents         BIGINT NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (gene, order_no, line_no),
    FOREIGN KEY (gene, order_no) REFERENCES orders (gene, order_no) ON DELETE CASCADE
) PARTITION BY LIST (gene);
CREATE INDEX tickets_seat ON tickets (seat_id) WHERE seat_id IS NOT NULL;

DO $$
BEGIN
    FOR g IN 0..15 LOOP
        EXECUTE format('CREATE TABLE orders_g%s PARTITION OF orders FOR VALUES IN (%s)', g, g);
        EXECUTE format('CREATE TABLE tickets_g%s PARTITION OF tickets FOR VALUES IN (%s)', g, g);
    END LOOP;
END
$$;

-- Live claims: a row exists exactly while a ticket's order is live (pending_payment or paid).
-- Their primary keys make invariants 3 and 5 impossible to break in the database: no seat in two
-- live orders, and one live ticket per real-name ticket buyer per program.
CREATE TABLE seat_claims (
    seat_id     BIGINT PRIMARY KEY REFERENCES seats (id),
    order_no    BIGINT NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX seat_claims_order ON seat_claims (order_no);

CREATE TABLE buyer_claims (
    program_id      BIGINT NOT NULL,
    ticket_buyer_id BIGINT NOT NULL,
    order_no        BIGINT NOT NULL,
    PRIMARY KEY (program_id, ticket_buyer_id)
);
CREATE INDEX buyer_claims_order ON buyer_claims (order_no);

-- Tickets of live orders claim their seat and their buyer; a clash raises unique_violation.
CREATE FUNCTION tickets_claim() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    order_status TEXT;
BEGIN
    SELECT status INTO order_status FROM orders WHERE gene = NEW.gene AND order_no = NEW.order_no;
    IF order_status IN ('pending_payment', 'paid') THEN
        IF NEW.seat_id IS NOT NULL THEN
            INSERT INTO seat_claims (seat_id, order_no) VALUES (NEW.seat_id, NEW.order_no);
        END IF;
        INSERT INTO buyer_claims (program_id, ticket_buyer_id, order_no)
            VALUES (NEW.program_id, NEW.ticket_buyer_id, NEW.order_no);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tickets_claim AFTER INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION tickets_claim();

-- An order leaving the live states releases its claims; status never goes back to live.
CREATE FUNCTION orders_release_claims() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('pending_payment', 'paid') AND NEW.status NOT IN ('pending_payment', 'paid') THEN
        DELETE FROM seat_claims WHERE order_no = NEW.order_no;
        DELETE FROM buyer_claims WHERE order_no = NEW.order_no;
    ELSIF OLD.status NOT IN ('pending_payment', 'paid') AND NEW.status IN ('pending_payment', 'paid') THEN
        RAISE EXCEPTION 'order % cannot return from % to %', NEW.order_no, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER orders_release_claims AFTER UPDATE OF status ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_release_claims();

-- ---------------------------------------------------------------------------------------------
-- Payments
-- ---------------------------------------------------------------------------------------------

CREATE TABLE payment_bills (
    id              UUID PRIMARY KEY,
    order_no        BIGINT NOT NULL,
    channel         TEXT NOT NULL,
    amount_cents    BIGINT NOT NULL CHECK (amount_cents >= 0),
    trade_no        TEXT,
    status          TEXT NOT NULL CHECK (status IN ('created', 'paid', 'refunded', 'failed')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at         TIMESTAMPTZ
);
CREATE INDEX payment_bills_order ON payment_bills (order_no);

CREATE TABLE refunds (
    id              UUID PRIMARY KEY,
    order_no        BIGINT NOT NULL,
    payment_id      UUID NOT NULL REFERENCES payment_bills (id),
    amount_cents    BIGINT NOT NULL CHECK (amount_cents >= 0),
    reason          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('requested', 'succeeded', 'failed')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (payment_id)
);

-- ---------------------------------------------------------------------------------------------
-- Idempotency, outbox (MQ message records), consumer inbox
-- ---------------------------------------------------------------------------------------------

CREATE TABLE idempotency_keys (
    user_id         BIGINT NOT NULL REFERENCES users (id),
    idem_key        TEXT NOT NULL CHECK (length(idem_key) BETWEEN 1 AND 255),
    request_hash    BYTEA NOT NULL,
    response_status SMALLINT,
    response_body   BYTEA,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Every order state change writes exactly one row here in the same transaction (invariant 6).
-- The admin console shows these rows as "MQ message records".
CREATE TABLE outbox (
    id                  BIGSERIAL PRIMARY KEY,
    event_id            UUID NOT NULL UNIQUE,
    topic               TEXT NOT NULL,
    message_key         TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    order_no            BIGINT,
    program_id          BIGINT,
    payload             JSONB NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    send_status         TEXT NOT NULL DEFAULT 'pending' CHECK (send_status IN ('pending', 'sent', 'failed')),
    send_attempts       INT NOT NULL DEFAULT 0,
    sent_at             TIMESTAMPTZ,
    reconcile_status    TEXT NOT NULL DEFAULT 'unreconciled'
                        CHECK (reconcile_status IN ('unreconciled', 'ok', 'problem', 'handled'))
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE send_status <> 'sent';
CREATE INDEX outbox_order ON outbox (order_no);
CREATE INDEX outbox_program ON outbox (program_id, id);

-- Consumers record each event they applied: the primary key makes applying twice impossible.
CREATE TABLE consumer_inbox (
    consumer        TEXT NOT NULL,
    event_id        UUID NOT NULL,
    processed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- ---------------------------------------------------------------------------------------------
-- Operations: discarded orders, reconciliation, audit
-- ---------------------------------------------------------------------------------------------

CREATE TABLE discarded_orders (
    id                  BIGSERIAL PRIMARY KEY,
    order_no            BIGINT NOT NULL,
    user_id             BIGINT NOT NULL,
    program_id          BIGINT NOT NULL,
    reason              TEXT NOT NULL,
    tickets             JSONB NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX discarded_orders_program ON discarded_orders (program_id, created_at DESC);

CREATE TABLE reconciliation_findings (
    id                  BIGSERIAL PRIMARY KEY,
    program_id          BIGINT,
    ticket_category_id  BIGINT,
    order_no            BIGINT,
    kind                TEXT NOT NULL,
    details             JSONB NOT NULL,
    status              TEXT NOT NULL DEFAULT 'problem' CHECK (status IN ('problem', 'handled', 'ok')),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    handled_at          TIMESTAMPTZ
);

CREATE TABLE admin_audit_log (
    id              BIGSERIAL PRIMARY KEY,
    admin_user_id   BIGINT NOT NULL REFERENCES users (id),
    action          TEXT NOT NULL,
    target          TEXT NOT NULL,
    details         JSONB NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
