-- message-db: get_category_messages of 100 messages from the same relative
-- position, on the same 1M rows loaded into message_db (its position is
-- inclusive, es's after_position exclusive: hence + 1).
\set p :base + random(0, 900000)
SELECT * FROM message_store.get_category_messages(:cat, :p + 1, 100);
