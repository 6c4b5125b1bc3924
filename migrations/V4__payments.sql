-- Payments confirm and refunds return an order's general-admission tickets by order number.
CREATE INDEX ga_holds_order ON ga_holds (order_no);
