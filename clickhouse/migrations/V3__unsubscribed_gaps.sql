-- A market the collector stopped watching before the exchange closed its book (paused,
-- filtered out, or a subscription refused): from then on its stored book is not known to be
-- the exchange's. Adding an Enum8 value is a metadata change; repeating it is a no-op.
ALTER TABLE feed_gaps
    MODIFY COLUMN kind Enum8('sequence_gap' = 1, 'reconnect' = 2, 'negative_size' = 3,
                             'subscription_error' = 4, 'collector_restart' = 5,
                             'malformed_frame' = 6, 'book_replaced' = 7, 'unsubscribed' = 8);
