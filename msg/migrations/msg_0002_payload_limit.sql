-- A topic message is bounded in the database too, whatever writes it (a SQL client as much as
-- the Rust client, whose own limit, message_bytes_max, is 1 MiB by default): at most 16 MiB,
-- the largest payload the system database takes (dbos_store::limits::PAYLOAD_BYTES_MAX).
ALTER TABLE msg.messages
    ADD CONSTRAINT messages_payload_bytes_max CHECK (octet_length(payload) <= 16777216) NOT VALID;
