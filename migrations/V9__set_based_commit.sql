-- Set-based group commit: the writer commits a batch of orders with one statement per table
-- (src/store/batch.rs). Nothing here may fire per ticket row, and no check may stay on the hot
-- tables that the claims and the writer do not already make.

-- ---------------------------------------------------------------------------------------------
-- The writer no longer calls a function per order (each call was a subtransaction: its
-- EXCEPTION block; past 64 in one transaction Postgres's subtransaction cache overflows).
-- ---------------------------------------------------------------------------------------------
DROP FUNCTION place_order(BIGINT, BIGINT, BIGINT, BIGINT, TIMESTAMPTZ, INT, BIGINT[], BIGINT[], INT[],
                          BIGINT[], BIGINT[], BIGINT[], BIGINT[], JSONB, TEXT, BYTEA, SMALLINT, BYTEA,
                          BIGINT, INTERVAL);

-- ---------------------------------------------------------------------------------------------
-- Claims, per statement. Invariants 3 and 5 (no seat in two live orders, one live ticket per
-- ticket buyer per program) stay the database's own: every statement that inserts tickets
-- claims their seats and buyers, and the claims' primary keys refuse a second live claim. The
-- trigger fires once per statement with all inserted tickets, so a batch of 500 orders costs
-- one trigger call and two set-wise inserts instead of 500 calls and 1,000 single-row inserts.
-- ---------------------------------------------------------------------------------------------
DROP TRIGGER tickets_claim ON tickets;
DROP FUNCTION tickets_claim();

CREATE FUNCTION tickets_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only tickets of live orders claim; joined on the order's primary key (one partition).
    INSERT INTO seat_claims (seat_id, order_no)
    SELECT a.seat_id, a.order_no
    FROM added a JOIN orders o ON o.gene = a.gene AND o.order_no = a.order_no
    WHERE a.seat_id IS NOT NULL AND o.status IN ('pending_payment', 'paid');
    INSERT INTO buyer_claims (program_id, ticket_buyer_id, order_no)
    SELECT a.program_id, a.ticket_buyer_id, a.order_no
    FROM added a JOIN orders o ON o.gene = a.gene AND o.order_no = a.order_no
    WHERE o.status IN ('pending_payment', 'paid');
    RETURN NULL;
END
$$;
-- Generic plans, as for the functions before (V5): the join reaches 16 partitions.
ALTER FUNCTION tickets_claim() SET plan_cache_mode = force_generic_plan;
CREATE TRIGGER tickets_claim AFTER INSERT ON tickets
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION tickets_claim();

-- Orders leaving the live states release their claims, one statement for all of them (an
-- expiry wave closes thousands of orders in a few batches); and no order returns to live.
DROP TRIGGER orders_release_claims ON orders;
DROP FUNCTION orders_release_claims();

CREATE FUNCTION orders_release_claims() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM old_rows b JOIN new_rows a ON a.gene = b.gene AND a.order_no = b.order_no
               WHERE b.status NOT IN ('pending_payment', 'paid') AND a.status IN ('pending_payment', 'paid'))
    THEN
        RAISE EXCEPTION 'a closed order cannot become live again' USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM seat_claims c
    USING old_rows b JOIN new_rows a ON a.gene = b.gene AND a.order_no = b.order_no
    WHERE c.order_no = a.order_no
      AND b.status IN ('pending_payment', 'paid') AND a.status NOT IN ('pending_payment', 'paid');
    DELETE FROM buyer_claims c
    USING old_rows b JOIN new_rows a ON a.gene = b.gene AND a.order_no = b.order_no
    WHERE c.order_no = a.order_no
      AND b.status IN ('pending_payment', 'paid') AND a.status NOT IN ('pending_payment', 'paid');
    RETURN NULL;
END
$$;
ALTER FUNCTION orders_release_claims() SET plan_cache_mode = force_generic_plan;
-- (A trigger with transition tables cannot name columns, so it fires on every UPDATE of
-- orders; one that changes no status finds nothing to do.)
CREATE TRIGGER orders_release_claims AFTER UPDATE ON orders
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION orders_release_claims();

-- ---------------------------------------------------------------------------------------------
-- Foreign keys on the hot tables. A one-seat order fired eight checks; each protected nothing
-- the writer does not establish in the same transaction:
-- ---------------------------------------------------------------------------------------------
-- the buyer: the order comes from a verified token, and the writer's check finds every ticket
-- buyer owned by that user (ticket_buyers.user_id keeps its own key to users);
ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey;
-- the program and show time: read from the catalog the order was validated against, and
-- programs and show times are never deleted while they have orders;
ALTER TABLE orders DROP CONSTRAINT orders_program_id_fkey;
ALTER TABLE orders DROP CONSTRAINT orders_show_time_id_fkey;
-- the category: its actor, which reserved the tickets, loaded it from Postgres;
ALTER TABLE tickets DROP CONSTRAINT tickets_ticket_category_id_fkey;
-- the ticket buyer: checked by the writer (owned by the user, not deleted) before the insert;
ALTER TABLE tickets DROP CONSTRAINT tickets_ticket_buyer_id_fkey;
-- the seat: the same batch's seat update touched exactly these seats, or the batch is undone;
ALTER TABLE tickets DROP CONSTRAINT tickets_seat_id_fkey;
ALTER TABLE seat_claims DROP CONSTRAINT seat_claims_seat_id_fkey;
-- the order: inserted by the same batch, and the claim trigger joins it; orders are never
-- deleted (they close), so the cascade had nothing to do;
ALTER TABLE tickets DROP CONSTRAINT tickets_gene_order_no_fkey;
-- the idempotency record's user: written with the user's own order.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_user_id_fkey;
-- Kept: ga_holds → ticket_categories (its ON DELETE CASCADE clears the holds of a removed
-- tier), and every key of the catalog tables, which are written rarely.

-- ---------------------------------------------------------------------------------------------
-- Indexes. An UPDATE can be HOT (no index entries written, the new row version on the same
-- page) only if no indexed column changes; a hold changes status, order_no and the deadline.
-- ---------------------------------------------------------------------------------------------
-- Indexed status / order_no: every hold, release and sale wrote three index entries.
-- Payments now find an order's seats through its tickets (primary key), the holds sweep
-- through the live seat claims, and "seats left" counts by category through the unique
-- (ticket_category_id, row_no, col_no) index.
DROP INDEX seats_category_status;
DROP INDEX seats_order;
DROP INDEX seats_held_category;
-- Room on every page for the updated row version (applies to pages written from now on, i.e.
-- every program created after this migration).
ALTER TABLE seats SET (fillfactor = 80);
ALTER TABLE ticket_categories SET (fillfactor = 80);
-- No query reads tickets by seat or orders by program; each cost an index entry per insert.
DROP INDEX tickets_seat;
DROP INDEX orders_program;

-- What stays, and why:
-- seats_pkey                 the writer's set-wise seat update joins on it.
-- seats_ticket_category_id_row_no_col_no_key  no two seats in one place; loads a category's grid.
-- orders_pkey (gene, order_no)          one order by number; the claim trigger's join.
-- orders_user (gene, user_id, created_at) the writer's account-limit check and "my orders".
-- tickets_pkey (gene, order_no, line_no) an order's tickets.
-- seat_claims_pkey, buyer_claims_pkey   invariants 3 and 5.
-- seat_claims_order, buyer_claims_order  releasing an order's claims.
-- idempotency_keys_pkey                 one answer per key; idempotency_keys_created: the purge.
-- outbox indexes                        the relay and the reconciler (V8).
