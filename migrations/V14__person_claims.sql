-- One live ticket per *person* per program, across accounts (invariant 5).
--
-- A ticket buyer row belongs to one account, and until now a claim named the row
-- (buyer_claims (program_id, ticket_buyer_id)): the same person added to a second account, or
-- deleted and added again, was a new row and got a second live ticket for the same program —
-- exactly how scalpers multiply their share of a sale. A claim now names the person, the id
-- type and the keyed hash of the id number, and its primary key refuses a second live claim
-- whichever account or row it comes through. The constraint keeps its name, buyer_claims_pkey,
-- so the writer's refusal (BUYER_HAS_TICKET) and every client see the same answer as before.
--
-- Also: the version of the key scheme that sealed and hashed each ticket buyer's id number.

-- ---------------------------------------------------------------------------------------------
-- Key scheme per ticket buyer. Rows written before this migration (and by any binary still
-- running the old code during a rolling start) are 0, the legacy scheme: the configured key
-- used directly to encrypt and as the hash key. The application seals new rows with version 1
-- (keys derived per purpose with HKDF, ciphertexts bound to their row) and, before it serves,
-- re-seals and re-hashes every version-0 row, updating the claims of each row in the same
-- transaction (store::ticket_buyers::rekey_legacy). The partial index finds what is left to do
-- without scanning the table on every start, and is empty once the pass has run.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE ticket_buyers ADD COLUMN id_key_version SMALLINT NOT NULL DEFAULT 0
    CHECK (id_key_version IN (0, 1));
CREATE INDEX ticket_buyers_legacy_key ON ticket_buyers (id) WHERE id_key_version = 0;

-- ---------------------------------------------------------------------------------------------
-- The person on every claim. Copied from the ticket buyer when the claim is made (below), so
-- the key is checked by the claims' own index: no join at check time, and a claim keeps naming
-- its person even if the row is deleted later. ticket_buyer_id stays, to say which row holds
-- the claim (the re-keying pass finds a row's claims by it).
-- ---------------------------------------------------------------------------------------------
ALTER TABLE buyer_claims ADD COLUMN id_type TEXT, ADD COLUMN id_number_hash BYTEA;
UPDATE buyer_claims c SET id_type = b.id_type, id_number_hash = b.id_number_hash
FROM ticket_buyers b WHERE b.id = c.ticket_buyer_id;

-- Live claims that the new key refuses: one person holding live tickets for one program
-- through several rows (the abuse this migration closes). Their orders were accepted under the
-- old rule and may be paid, so a migration does not cancel them; the earliest order keeps the
-- person's claim, and the others are moved here for operators to review (and cancel or refund
-- through the usual paths). An order listed here has no claim, so closing it releases nothing.
-- The re-keying pass adds to this table the same way should re-hashing (which folds case and
-- spacing of the id number) make two claims one person's.
CREATE TABLE person_claim_conflicts (
    program_id      BIGINT NOT NULL,
    ticket_buyer_id BIGINT NOT NULL,
    order_no        BIGINT NOT NULL,
    id_type         TEXT,
    id_number_hash  BYTEA,
    found_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, ticket_buyer_id, order_no)
);

WITH ranked AS (
    SELECT ctid AS row_at,
           row_number() OVER (PARTITION BY program_id, id_type, id_number_hash
                              ORDER BY order_no, ticket_buyer_id) AS n
    FROM buyer_claims),
-- (A claim whose ticket buyer row is missing gets no person and is set aside too: nothing
-- could tell whom it names.)
moved AS (
    DELETE FROM buyer_claims c USING ranked r
    WHERE c.ctid = r.row_at AND (r.n > 1 OR c.id_number_hash IS NULL)
    RETURNING c.program_id, c.ticket_buyer_id, c.order_no, c.id_type, c.id_number_hash)
INSERT INTO person_claim_conflicts (program_id, ticket_buyer_id, order_no, id_type, id_number_hash)
SELECT program_id, ticket_buyer_id, order_no, id_type, id_number_hash FROM moved;

ALTER TABLE buyer_claims ALTER COLUMN id_type SET NOT NULL, ALTER COLUMN id_number_hash SET NOT NULL;
ALTER TABLE buyer_claims DROP CONSTRAINT buyer_claims_pkey;
ALTER TABLE buyer_claims ADD CONSTRAINT buyer_claims_pkey PRIMARY KEY (program_id, id_type, id_number_hash);
-- No index on ticket_buyer_id: it would cost an entry per claim on the hot path, for the
-- re-keying pass alone, which runs once per legacy row and may scan the (live-only) claims.

-- ---------------------------------------------------------------------------------------------
-- The claim trigger: still one call per statement with set-wise inserts (V9), now joining the
-- inserted tickets' ticket buyers by primary key to copy the person. Measured per 1,000-ticket
-- statement (200,000 ticket buyers, interleaved runs on a loaded two-core machine): trigger
-- 25.8 ms before, 32.6 ms after on a fresh table — the wider key (type + 32-byte hash instead of
-- a bigint) and the join together, ~7 µs a ticket; with 40,000 live claims already there, 87 ms
-- before, 86 ms after, and 89 ms with the hash carried on each ticket instead of joined — the
-- same within noise. Carrying it would widen every ticket row and make the writer, not the
-- database, the source of the key, for nothing measurable. LEFT JOIN: a ticket whose ticket buyer
-- row is missing leaves the person NULL and the NOT NULL constraint refuses the statement, as
-- the foreign key did before V9, instead of a live ticket without a claim.
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION tickets_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only tickets of live orders claim; joined on the order's primary key (one partition).
    INSERT INTO seat_claims (seat_id, order_no)
    SELECT a.seat_id, a.order_no
    FROM added a JOIN orders o ON o.gene = a.gene AND o.order_no = a.order_no
    WHERE a.seat_id IS NOT NULL AND o.status IN ('pending_payment', 'paid');
    INSERT INTO buyer_claims (program_id, id_type, id_number_hash, ticket_buyer_id, order_no)
    SELECT a.program_id, b.id_type, b.id_number_hash, a.ticket_buyer_id, a.order_no
    FROM added a JOIN orders o ON o.gene = a.gene AND o.order_no = a.order_no
    LEFT JOIN ticket_buyers b ON b.id = a.ticket_buyer_id
    WHERE o.status IN ('pending_payment', 'paid');
    RETURN NULL;
END
$$;
-- CREATE OR REPLACE resets the function's settings: generic plans again, as in V5 and V9. The
-- statement-level trigger itself stays as V9 made it.
ALTER FUNCTION tickets_claim() SET plan_cache_mode = force_generic_plan;
-- orders_release_claims is unchanged: it deletes an order's claims by order_no.
