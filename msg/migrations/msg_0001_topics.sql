-- Pub/sub topics: one stored copy of each message, one cursor per subscriber.
CREATE SCHEMA IF NOT EXISTS msg;

CREATE TABLE msg.topics (
    name              text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 255),
    -- Sequence number the next published message gets. Publishers update this row, so the
    -- messages of one topic commit in sequence order and a cursor never skips one.
    next_seq          bigint NOT NULL DEFAULT 1 CHECK (next_seq >= 1),
    -- Retention: messages older than this, or beyond the newest this many, are swept.
    retain_max_age_ms bigint DEFAULT 604800000 CHECK (retain_max_age_ms > 0),
    retain_max_count  bigint CHECK (retain_max_count > 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE msg.messages (
    topic        text NOT NULL REFERENCES msg.topics (name) ON DELETE CASCADE,
    seq          bigint NOT NULL CHECK (seq >= 1),
    payload      text NOT NULL,
    publisher    text,
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, seq)
);
CREATE INDEX messages_published_at ON msg.messages (published_at);

CREATE TABLE msg.subscriptions (
    topic       text NOT NULL REFERENCES msg.topics (name) ON DELETE CASCADE,
    subscriber  text NOT NULL CHECK (length(subscriber) BETWEEN 1 AND 255),
    -- Sequence number of the last message consumed (0 before the first).
    cursor      bigint NOT NULL CHECK (cursor >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    consumed_at timestamptz,
    PRIMARY KEY (topic, subscriber)
);

-- The messaging state, for people with SQL.
CREATE VIEW os.messages AS
SELECT n.message_uuid AS message_id,
       n.destination_uuid AS destination,
       NULLIF(n.topic, '__null__topic__') AS topic,
       n.message,
       n.consumed,
       n.consumed_by_function_id,
       to_timestamp(n.created_at_epoch_ms / 1000.0) AS sent_at
FROM dbos.notifications n;

CREATE VIEW os.events AS
SELECT e.workflow_uuid AS workflow_id, e.key, e.value,
       (SELECT count(*) FROM dbos.workflow_events_history h
        WHERE h.workflow_uuid = e.workflow_uuid AND h.key = e.key) AS versions
FROM dbos.workflow_events e;

CREATE VIEW os.streams AS
SELECT s.workflow_uuid AS workflow_id, s.key,
       count(*) FILTER (WHERE s.value <> '"__DBOS_STREAM_CLOSED__"') AS values,
       bool_or(s.value = '"__DBOS_STREAM_CLOSED__"') AS closed,
       sum(length(s.value)) AS bytes
FROM dbos.streams s
GROUP BY s.workflow_uuid, s.key;

CREATE VIEW os.topics AS
SELECT t.name AS topic,
       t.next_seq - 1 AS head_seq,
       (SELECT count(*) FROM msg.messages m WHERE m.topic = t.name) AS retained,
       (SELECT min(m.published_at) FROM msg.messages m WHERE m.topic = t.name) AS oldest_at,
       (SELECT count(*) FROM msg.subscriptions s WHERE s.topic = t.name) AS subscribers,
       t.retain_max_age_ms, t.retain_max_count, t.created_at
FROM msg.topics t;

CREATE VIEW os.subscriptions AS
SELECT s.topic, s.subscriber, s.cursor, t.next_seq - 1 - s.cursor AS lag,
       s.created_at, s.consumed_at
FROM msg.subscriptions s JOIN msg.topics t ON t.name = s.topic;
