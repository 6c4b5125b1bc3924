-- At most one open (unpaid) bill per order and channel: starting payment again answers the open
-- bill instead of opening another trade at the provider (each start used to open one, without
-- a cap). `open_bill` inserts with ON CONFLICT on this index and reads the winner's bill.
--
-- Orders that already have several open bills keep the newest open; the older ones become
-- `superseded`. Their trades may still be paid at the provider, so a notice for one is still
-- applied (or refunded) like an open bill's, and pay-check still asks about them.
ALTER TABLE payment_bills DROP CONSTRAINT payment_bills_status_check;
ALTER TABLE payment_bills ADD CONSTRAINT payment_bills_status_check
    CHECK (status IN ('created', 'superseded', 'paid', 'refunded', 'failed'));

UPDATE payment_bills b SET status = 'superseded'
WHERE b.status = 'created'
  AND EXISTS (SELECT 1 FROM payment_bills newer
              WHERE newer.order_no = b.order_no AND newer.channel = b.channel
                AND newer.status = 'created'
                AND (newer.created_at, newer.id) > (b.created_at, b.id));

CREATE UNIQUE INDEX payment_bills_one_open ON payment_bills (order_no, channel)
    WHERE status = 'created';
