-- Order-path correctness (see the issue "no acknowledged order may fall out of its actor").

-- Every load of a category bumps this counter; the actor starts its seat-map sequence numbers at
-- `loads << 32`, so `seq` never goes backwards across a reload, a restart or another node.
ALTER TABLE ticket_categories ADD COLUMN loads BIGINT NOT NULL DEFAULT 0;

-- The supervisor asks for every category with holds waiting for payment (at startup and every
-- `actors.live_holds_sweep_secs`): with these the question reads only held rows.
CREATE INDEX seats_held_category ON seats (ticket_category_id) WHERE status = 'held';
CREATE INDEX ga_holds_held_category ON ga_holds (ticket_category_id) WHERE status = 'held';

-- place_order() now writes the order's show time and lets an Idempotency-Key past its window
-- start a fresh order instead of colliding with the stale record.
DROP FUNCTION place_order(BIGINT, BIGINT, BIGINT, BIGINT, TIMESTAMPTZ, INT, BIGINT[], BIGINT[], INT[],
                          BIGINT[], BIGINT[], BIGINT[], BIGINT[], JSONB, TEXT, BYTEA, SMALLINT, BYTEA);

CREATE FUNCTION place_order(
    p_order_no          BIGINT,
    p_user_id           BIGINT,
    p_program_id        BIGINT,
    p_total_cents       BIGINT,
    p_expires_at        TIMESTAMPTZ,
    p_per_account_limit INT,
    p_seat_ids          BIGINT[],
    p_ga_categories     BIGINT[],
    p_ga_quantities     INT[],
    p_t_categories      BIGINT[],
    p_t_buyers          BIGINT[],
    p_t_seats           BIGINT[],
    p_t_prices          BIGINT[],
    p_event             JSONB,
    p_idem_key          TEXT,
    p_idem_hash         BYTEA,
    p_idem_status       SMALLINT,
    p_idem_body         BYTEA,
    p_show_time_id      BIGINT,
    p_idem_ttl          INTERVAL
) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    g       SMALLINT := (p_user_id & 15)::smallint;
    live    BIGINT;
    touched INT;
    wanted  INT := coalesce(array_length(p_seat_ids, 1), 0);
    failed  TEXT;
BEGIN
    -- Exact under concurrency because one writer commits orders one batch after another.
    SELECT count(*) INTO live
    FROM tickets t JOIN orders o ON o.gene = t.gene AND o.order_no = t.order_no
    WHERE t.gene = g AND o.gene = g AND o.user_id = p_user_id AND o.program_id = p_program_id
      AND o.status IN ('pending_payment', 'paid');
    IF live + coalesce(array_length(p_t_buyers, 1), 0) > p_per_account_limit THEN
        RETURN 'LIMIT_EXCEEDED';
    END IF;
    BEGIN
        -- A key past its window starts a fresh order (API.md: answers are replayed for 24 h);
        -- the background purge removes the rest of the expired keys.
        DELETE FROM idempotency_keys
        WHERE user_id = p_user_id AND idem_key = p_idem_key AND created_at <= now() - p_idem_ttl;
        INSERT INTO orders (order_no, gene, user_id, program_id, show_time_id, status, total_cents, expires_at)
        VALUES (p_order_no, g, p_user_id, p_program_id, p_show_time_id, 'pending_payment', p_total_cents,
                p_expires_at);
        IF wanted > 0 THEN
            UPDATE seats SET status = 'held', order_no = p_order_no, hold_expires_at = p_expires_at
            WHERE id = ANY (p_seat_ids) AND status = 'available';
            GET DIAGNOSTICS touched = ROW_COUNT;
            IF touched <> wanted THEN
                RAISE EXCEPTION 'SEAT_UNAVAILABLE';
            END IF;
        END IF;
        FOR i IN 1 .. coalesce(array_length(p_ga_categories, 1), 0) LOOP
            INSERT INTO ga_holds (ticket_category_id, order_no, quantity, status, hold_expires_at)
            VALUES (p_ga_categories[i], p_order_no, p_ga_quantities[i], 'held', p_expires_at);
            UPDATE ticket_categories SET ga_taken = ga_taken + p_ga_quantities[i]
            WHERE id = p_ga_categories[i];
        END LOOP;
        INSERT INTO tickets (order_no, gene, line_no, user_id, program_id, ticket_category_id,
                             ticket_buyer_id, seat_id, price_cents)
        SELECT p_order_no, g, l::smallint, p_user_id, p_program_id, c, b, s, pr
        FROM unnest(p_t_categories, p_t_buyers, p_t_seats, p_t_prices) WITH ORDINALITY AS t (c, b, s, pr, l);
        INSERT INTO outbox (event_id, topic, message_key, event_type, order_no, program_id, payload)
        VALUES (gen_random_uuid(), 'order-events', p_order_no::text, 'OrderCreated', p_order_no,
                p_program_id, p_event);
        INSERT INTO idempotency_keys (user_id, idem_key, request_hash, response_status, response_body)
        VALUES (p_user_id, p_idem_key, p_idem_hash, p_idem_status, p_idem_body);
        RETURN 'OK';
    EXCEPTION
        WHEN raise_exception THEN
            RETURN SQLERRM;
        WHEN check_violation THEN
            RETURN 'SOLD_OUT';
        WHEN unique_violation THEN
            GET STACKED DIAGNOSTICS failed = CONSTRAINT_NAME;
            RETURN CASE failed
                WHEN 'buyer_claims_pkey' THEN 'BUYER_HAS_TICKET'
                WHEN 'idempotency_keys_pkey' THEN 'IN_FLIGHT'
                ELSE 'SEAT_UNAVAILABLE' END;
    END;
END
$$;

-- Generic plans, as for the previous version (see V5).
ALTER FUNCTION place_order(BIGINT, BIGINT, BIGINT, BIGINT, TIMESTAMPTZ, INT, BIGINT[], BIGINT[], INT[],
                           BIGINT[], BIGINT[], BIGINT[], BIGINT[], JSONB, TEXT, BYTEA, SMALLINT, BYTEA,
                           BIGINT, INTERVAL)
    SET plan_cache_mode = force_generic_plan;
