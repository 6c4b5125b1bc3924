-- A discarded order kept in memory while Postgres was unreachable is written when it returns; a
-- write whose answer was lost is tried again. One row per attempt (its order number), however
-- often it is written.
CREATE UNIQUE INDEX discarded_orders_order_no ON discarded_orders (order_no);
