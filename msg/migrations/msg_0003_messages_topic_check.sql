-- A topic's messages need their topic, checked once per statement instead of once per row.
--
-- The foreign key ran one lookup of the topic for every message a publish inserts: with 100
-- messages a publish, that was half of the publish's execution. Publishes insert the messages of
-- one topic, so a statement trigger looks each topic up once, with the lock a foreign key takes
-- (FOR KEY SHARE). Deleting a topic still deletes its messages; renaming one that has messages,
-- or moving a message to a missing topic, is still refused.
ALTER TABLE msg.messages DROP CONSTRAINT messages_topic_fkey;

CREATE FUNCTION msg.need_topic(wanted text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM msg.topics WHERE name = wanted FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'msg.messages: topic % does not exist in msg.topics', wanted
            USING ERRCODE = 'foreign_key_violation';
    END IF;
END $$;

CREATE FUNCTION msg.inserted_messages_need_topics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM msg.need_topic(t.topic) FROM (SELECT DISTINCT topic FROM new_messages) t;
    RETURN NULL;
END $$;

CREATE TRIGGER inserted_messages_need_topics AFTER INSERT ON msg.messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION msg.inserted_messages_need_topics();

CREATE FUNCTION msg.moved_message_needs_topic() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM msg.need_topic(NEW.topic);
    RETURN NULL;
END $$;

CREATE TRIGGER moved_message_needs_topic AFTER UPDATE OF topic ON msg.messages
    FOR EACH ROW WHEN (OLD.topic IS DISTINCT FROM NEW.topic)
    EXECUTE FUNCTION msg.moved_message_needs_topic();

CREATE FUNCTION msg.deleted_topics_take_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM msg.messages m USING old_topics o WHERE m.topic = o.name;
    RETURN NULL;
END $$;

CREATE TRIGGER deleted_topics_take_messages AFTER DELETE ON msg.topics
    REFERENCING OLD TABLE AS old_topics
    FOR EACH STATEMENT EXECUTE FUNCTION msg.deleted_topics_take_messages();

CREATE FUNCTION msg.renamed_topic_has_no_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM msg.messages WHERE topic = OLD.name) THEN
        RAISE EXCEPTION 'msg.topics: topic % still has messages', OLD.name
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER renamed_topic_has_no_messages AFTER UPDATE OF name ON msg.topics
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION msg.renamed_topic_has_no_messages();
