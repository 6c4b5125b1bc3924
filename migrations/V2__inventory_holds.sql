-- Persistent state of the category actors for general-admission categories, plus the database's
-- own guard against overselling them. (Seated categories persist in `seats`.)

-- Tickets of GA categories currently in live orders; the CHECK refuses an oversell outright.
ALTER TABLE ticket_categories ADD COLUMN ga_taken INT NOT NULL DEFAULT 0;
ALTER TABLE ticket_categories ADD CONSTRAINT ga_taken_within_capacity
    CHECK (ga_taken >= 0 AND ga_taken <= capacity);

CREATE TABLE ga_holds (
    ticket_category_id  BIGINT NOT NULL REFERENCES ticket_categories (id) ON DELETE CASCADE,
    order_no            BIGINT NOT NULL,
    quantity            INT NOT NULL CHECK (quantity > 0),
    status              TEXT NOT NULL CHECK (status IN ('held', 'sold')),
    hold_expires_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (ticket_category_id, order_no)
);
