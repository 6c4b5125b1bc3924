-- Order events on Pulsar: the relay's bookkeeping, its wake-up signal, consumer failures and
-- dead letters.

-- The broker's id of the published message ("ledger:entry"), set with send_status = 'sent'.
ALTER TABLE outbox ADD COLUMN message_id TEXT;

-- The relay sends, per order, only the oldest unsent event (an order's later event waits until
-- the earlier one was acknowledged by the broker): this index answers "is there an older unsent
-- event of this order?" without reading sent rows.
CREATE INDEX outbox_unsent_order ON outbox (order_no, id) WHERE send_status <> 'sent';

-- The reconciler looks for events not consumed in time; only unreconciled rows are read.
CREATE INDEX outbox_unreconciled ON outbox (created_at) WHERE reconcile_status = 'unreconciled';

-- Every statement that writes outbox rows wakes the relays (LISTEN outbox). Statement-level, so
-- a batch of orders costs one notification, and Postgres folds identical notifications of one
-- transaction into one.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Failed attempts of a consumer on one event; past `events.max_attempts` the event is
-- dead-lettered instead of retried forever.
CREATE TABLE consumer_failures (
    consumer        TEXT NOT NULL,
    event_id        UUID NOT NULL,
    attempts        INT NOT NULL,
    last_error      TEXT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Events a consumer gave up on: kept for operators (and published to the dead-letter topic).
CREATE TABLE dead_letters (
    id              BIGSERIAL PRIMARY KEY,
    consumer        TEXT NOT NULL,
    event_id        UUID NOT NULL,
    payload         JSONB NOT NULL,
    attempts        INT NOT NULL,
    last_error      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (consumer, event_id)
);
