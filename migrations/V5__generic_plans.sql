-- The order path's functions run the same statements on the partitioned orders/tickets tables
-- thousands of times a second. With custom plans (the default choice here, because a generic plan
-- over 16 partitions looks costlier) every call re-plans, re-reading each partition's CHECK
-- constraints: profiles of `boxoffice bench ordering` showed planning as the largest share of
-- Postgres time. Generic plans prune partitions at executor start instead.
ALTER FUNCTION place_order(BIGINT, BIGINT, BIGINT, BIGINT, TIMESTAMPTZ, INT, BIGINT[], BIGINT[], INT[],
                           BIGINT[], BIGINT[], BIGINT[], BIGINT[], JSONB, TEXT, BYTEA, SMALLINT, BYTEA)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tickets_claim() SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION orders_release_claims() SET plan_cache_mode = force_generic_plan;
