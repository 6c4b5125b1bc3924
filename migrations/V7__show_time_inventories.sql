-- Show times become inventories: a ticket category belongs to exactly one show time.
--
-- Until now a program with several show times sold one shared set of categories and seats, so a
-- seat sold for Friday was gone for Saturday too. One actor owns one ticket category, so making
-- the category the inventory of (show time, tier) keeps that rule and gives every show time its
-- own seats: a program with N show times and T tiers has N × T ticket categories.

ALTER TABLE ticket_categories
    ADD COLUMN show_time_id BIGINT REFERENCES show_times (id) ON DELETE CASCADE;

-- Existing categories (with their seats, holds, sales and GA counters) stay with the program's
-- earliest show time: whatever was sold so far was sold for the first performance.
UPDATE ticket_categories tc
SET show_time_id = (SELECT st.id FROM show_times st WHERE st.program_id = tc.program_id
                    ORDER BY st.starts_at, st.id LIMIT 1);

-- A category without a show time cannot be sold; refuse loudly rather than guess a date.
DO $$
DECLARE
    orphans TEXT;
BEGIN
    SELECT string_agg(DISTINCT program_id::text, ', ') INTO orphans
    FROM ticket_categories WHERE show_time_id IS NULL;
    IF orphans IS NOT NULL THEN
        RAISE EXCEPTION 'programs % have ticket categories but no show time; add one and migrate again',
            orphans;
    END IF;
END
$$;

-- Tier names are now unique per show time: every show time repeats the program's tier names.
ALTER TABLE ticket_categories DROP CONSTRAINT ticket_categories_program_id_name_key;

-- Every other show time gets its own copy of each tier: same name, price, layout and order,
-- nothing taken, and a fresh seat grid with every seat available.
--
-- The outer INSERT reads `ticket_categories` with the statement's snapshot, so it sees only the
-- original categories, never the copies the CTE inserts; `(program_id, name)` is still unique
-- among those originals, which pairs every copy with the category whose seat grid it repeats.
WITH copies AS (
    INSERT INTO ticket_categories (program_id, show_time_id, name, price_cents, capacity, seated,
                                   seat_rows, seats_per_row, sort_order, ga_taken)
    SELECT tc.program_id, st.id, tc.name, tc.price_cents, tc.capacity, tc.seated,
           tc.seat_rows, tc.seats_per_row, tc.sort_order, 0
    FROM ticket_categories tc
    JOIN show_times st ON st.program_id = tc.program_id AND st.id <> tc.show_time_id
    RETURNING id, program_id, name
)
INSERT INTO seats (program_id, ticket_category_id, row_no, col_no, price_cents)
SELECT s.program_id, copies.id, s.row_no, s.col_no, s.price_cents
FROM copies
JOIN ticket_categories original
  ON original.program_id = copies.program_id AND original.name = copies.name
JOIN seats s ON s.ticket_category_id = original.id;

ALTER TABLE ticket_categories ALTER COLUMN show_time_id SET NOT NULL;

-- Its index also serves lookups by show time and the ON DELETE CASCADE from show_times
-- (show_time_id leads), so no separate index on show_time_id alone is needed.
ALTER TABLE ticket_categories
    ADD CONSTRAINT ticket_categories_show_time_id_name_key UNIQUE (show_time_id, name);

-- A category's show time must be one of its own program's: a category filed under another
-- program's show time would be sold as the wrong performance.
ALTER TABLE show_times ADD CONSTRAINT show_times_id_program_id_key UNIQUE (id, program_id);
ALTER TABLE ticket_categories
    ADD CONSTRAINT ticket_categories_show_time_of_program
    FOREIGN KEY (show_time_id, program_id) REFERENCES show_times (id, program_id) ON DELETE CASCADE;
