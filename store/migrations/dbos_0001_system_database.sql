-- The DBOS system database, as DBOS Transact 3.4.0 leaves it at migration version 125, written as
-- one migration. Every table, column, type, default, index, constraint, trigger and SQL function
-- matches that version (tests/schema_matches_dbos.rs compares it with the schema the Python
-- package creates), so DBOS's own CLI and clients work on a database this system writes.
--
-- A database whose schema `dbos` was already created by DBOS itself at version 125 or later is
-- adopted as it is.
DO $adopt$
BEGIN
    IF to_regclass('dbos.dbos_migrations') IS NOT NULL THEN
        IF (SELECT max(version) FROM dbos.dbos_migrations) < 125 THEN
            RAISE EXCEPTION 'schema dbos is at DBOS migration version %, older than 125',
                (SELECT max(version) FROM dbos.dbos_migrations)
                USING HINT = 'upgrade it with `dbos migrate` of DBOS Transact 3.4 first';
        END IF;
        RETURN;
    END IF;

    CREATE SCHEMA IF NOT EXISTS dbos;

    CREATE TABLE dbos.dbos_migrations (
        version bigint NOT NULL PRIMARY KEY
    );

    CREATE TABLE dbos.workflow_status (
        workflow_uuid text NOT NULL,
        status text,
        name text,
        authenticated_user text,
        assumed_role text,
        authenticated_roles text,
        request text,
        output text,
        error text,
        executor_id text,
        created_at bigint NOT NULL DEFAULT ((EXTRACT(epoch FROM now()) * 1000.0))::bigint,
        updated_at bigint NOT NULL DEFAULT ((EXTRACT(epoch FROM now()) * 1000.0))::bigint,
        application_version text,
        application_id text,
        class_name varchar(255) DEFAULT NULL::varchar,
        config_name varchar(255) DEFAULT NULL::varchar,
        recovery_attempts bigint DEFAULT 0,
        queue_name text,
        workflow_timeout_ms bigint,
        workflow_deadline_epoch_ms bigint,
        inputs text,
        started_at_epoch_ms bigint,
        deduplication_id text,
        priority integer NOT NULL DEFAULT 0,
        queue_partition_key text,
        forked_from text,
        owner_xid text,
        parent_workflow_id text,
        serialization text,
        delay_until_epoch_ms bigint,
        was_forked_from boolean NOT NULL DEFAULT false,
        rate_limited boolean NOT NULL DEFAULT false,
        completed_at bigint,
        attributes jsonb,
        schedule_name text,
        debounce_deadline_epoch_ms bigint,
        is_debounced boolean NOT NULL DEFAULT false,
        application_name text,
        creator_xid text,
        CONSTRAINT workflow_status_pkey PRIMARY KEY (workflow_uuid)
    );
    CREATE INDEX workflow_status_created_at_index ON dbos.workflow_status (created_at);
    CREATE UNIQUE INDEX uq_workflow_status_dedup_id ON dbos.workflow_status (queue_name, deduplication_id)
        WHERE deduplication_id IS NOT NULL;
    CREATE INDEX idx_workflow_status_forked_from ON dbos.workflow_status (forked_from)
        WHERE forked_from IS NOT NULL;
    CREATE INDEX idx_workflow_status_parent_workflow_id ON dbos.workflow_status (parent_workflow_id)
        WHERE parent_workflow_id IS NOT NULL;
    CREATE INDEX idx_workflow_status_pending ON dbos.workflow_status (created_at)
        WHERE status = 'PENDING';
    CREATE INDEX idx_workflow_status_failed ON dbos.workflow_status (status, created_at)
        WHERE status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED');
    CREATE INDEX idx_workflow_status_in_flight_v2 ON dbos.workflow_status (queue_name, status, priority, created_at)
        INCLUDE (application_name) WHERE status IN ('ENQUEUED', 'PENDING');
    CREATE INDEX idx_workflow_status_partition_dequeue_v3 ON dbos.workflow_status
        (queue_name, status, queue_partition_key, priority, created_at, workflow_uuid)
        INCLUDE (application_name)
        WHERE status IN ('ENQUEUED', 'PENDING') AND queue_partition_key IS NOT NULL;
    CREATE INDEX idx_workflow_status_rate_limited ON dbos.workflow_status (queue_name, started_at_epoch_ms)
        WHERE rate_limited = true;
    CREATE INDEX idx_workflow_status_completed_at ON dbos.workflow_status (completed_at)
        WHERE completed_at IS NOT NULL;
    CREATE INDEX idx_workflow_status_started_at ON dbos.workflow_status (started_at_epoch_ms)
        WHERE started_at_epoch_ms IS NOT NULL;
    CREATE INDEX idx_workflow_status_delayed ON dbos.workflow_status (delay_until_epoch_ms)
        WHERE status = 'DELAYED';
    CREATE INDEX idx_workflow_status_attributes ON dbos.workflow_status USING gin (attributes)
        WHERE attributes IS NOT NULL;
    CREATE INDEX idx_workflow_status_schedule_name ON dbos.workflow_status (schedule_name)
        WHERE schedule_name IS NOT NULL;
    CREATE INDEX idx_workflow_status_deadline ON dbos.workflow_status (workflow_deadline_epoch_ms)
        WHERE status IN ('ENQUEUED', 'PENDING', 'DELAYED') AND workflow_deadline_epoch_ms IS NOT NULL;

    CREATE TABLE dbos.workflow_input (
        workflow_uuid text NOT NULL,
        inputs text,
        retention_timestamp bigint NOT NULL DEFAULT ((EXTRACT(epoch FROM now()) * 1000.0))::bigint,
        CONSTRAINT workflow_input_pkey PRIMARY KEY (workflow_uuid)
    );
    CREATE INDEX idx_workflow_input_retention ON dbos.workflow_input (retention_timestamp);

    CREATE TABLE dbos.workflow_output (
        workflow_uuid text NOT NULL,
        output text,
        error text,
        retention_timestamp bigint NOT NULL DEFAULT ((EXTRACT(epoch FROM now()) * 1000.0))::bigint,
        CONSTRAINT workflow_output_pkey PRIMARY KEY (workflow_uuid)
    );
    CREATE INDEX idx_workflow_output_retention ON dbos.workflow_output (retention_timestamp);

    CREATE TABLE dbos.operation_outputs (
        workflow_uuid text NOT NULL,
        function_id integer NOT NULL,
        function_name text NOT NULL DEFAULT ''::text,
        output text,
        error text,
        child_workflow_id text,
        started_at_epoch_ms bigint,
        completed_at_epoch_ms bigint,
        serialization text,
        application_name text,
        retention_timestamp bigint NOT NULL DEFAULT ((EXTRACT(epoch FROM now()) * 1000.0))::bigint,
        CONSTRAINT operation_outputs_pkey PRIMARY KEY (workflow_uuid, function_id)
    );
    CREATE INDEX idx_operation_outputs_retention ON dbos.operation_outputs (retention_timestamp);
    CREATE INDEX idx_operation_outputs_completed_at_function_name_v2 ON dbos.operation_outputs
        (completed_at_epoch_ms, function_name) INCLUDE (application_name);

    CREATE TABLE dbos.notifications (
        message_uuid text NOT NULL DEFAULT gen_random_uuid(),
        destination_uuid text NOT NULL,
        topic text,
        message text NOT NULL,
        created_at_epoch_ms bigint NOT NULL DEFAULT ((EXTRACT(epoch FROM now()) * 1000.0))::bigint,
        serialization text,
        consumed boolean NOT NULL DEFAULT false,
        consumed_by_function_id integer,
        CONSTRAINT notifications_pkey PRIMARY KEY (message_uuid),
        CONSTRAINT notifications_destination_uuid_fkey FOREIGN KEY (destination_uuid)
            REFERENCES dbos.workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE
    );
    CREATE INDEX idx_workflow_topic ON dbos.notifications (destination_uuid, topic);

    CREATE TABLE dbos.workflow_events (
        workflow_uuid text NOT NULL,
        key text NOT NULL,
        value text NOT NULL,
        serialization text,
        CONSTRAINT workflow_events_pkey PRIMARY KEY (workflow_uuid, key),
        CONSTRAINT workflow_events_workflow_uuid_fkey FOREIGN KEY (workflow_uuid)
            REFERENCES dbos.workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE
    );

    CREATE TABLE dbos.workflow_events_history (
        workflow_uuid text NOT NULL,
        function_id integer NOT NULL,
        key text NOT NULL,
        value text NOT NULL,
        serialization text,
        CONSTRAINT workflow_events_history_pkey PRIMARY KEY (workflow_uuid, function_id, key),
        CONSTRAINT workflow_events_history_workflow_uuid_fkey FOREIGN KEY (workflow_uuid)
            REFERENCES dbos.workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE
    );

    CREATE TABLE dbos.streams (
        workflow_uuid text NOT NULL,
        key text NOT NULL,
        value text NOT NULL,
        "offset" integer NOT NULL,
        function_id integer NOT NULL DEFAULT 0,
        serialization text,
        CONSTRAINT streams_pkey PRIMARY KEY (workflow_uuid, key, "offset"),
        CONSTRAINT streams_workflow_uuid_fkey FOREIGN KEY (workflow_uuid)
            REFERENCES dbos.workflow_status (workflow_uuid) ON UPDATE CASCADE ON DELETE CASCADE
    );

    CREATE TABLE dbos.event_dispatch_kv (
        service_name text NOT NULL,
        workflow_fn_name text NOT NULL,
        key text NOT NULL,
        value text,
        update_seq numeric(38, 0),
        update_time numeric(38, 15),
        CONSTRAINT event_dispatch_kv_pkey PRIMARY KEY (service_name, workflow_fn_name, key)
    );

    CREATE TABLE dbos.workflow_schedules (
        schedule_id text NOT NULL,
        schedule_name text NOT NULL,
        workflow_name text NOT NULL,
        workflow_class_name text,
        schedule text NOT NULL,
        status text NOT NULL DEFAULT 'ACTIVE'::text,
        context text NOT NULL,
        last_fired_at text,
        automatic_backfill boolean NOT NULL DEFAULT false,
        cron_timezone text,
        queue_name text,
        application_name text,
        CONSTRAINT workflow_schedules_pkey PRIMARY KEY (schedule_id),
        CONSTRAINT workflow_schedules_schedule_name_key UNIQUE (schedule_name)
    );

    CREATE TABLE dbos.application_versions (
        version_id text NOT NULL,
        version_name text NOT NULL,
        version_timestamp bigint NOT NULL DEFAULT ((EXTRACT(epoch FROM now()) * 1000.0))::bigint,
        created_at bigint NOT NULL DEFAULT ((EXTRACT(epoch FROM now()) * 1000.0))::bigint,
        application_name text,
        CONSTRAINT application_versions_pkey PRIMARY KEY (version_id),
        CONSTRAINT application_versions_version_name_key UNIQUE (version_name)
    );
    CREATE INDEX idx_application_versions_timestamp ON dbos.application_versions (version_timestamp DESC);
    CREATE INDEX idx_application_versions_owner_timestamp ON dbos.application_versions
        (application_name, version_timestamp DESC);
    CREATE UNIQUE INDEX uq_application_versions_owner_version ON dbos.application_versions
        (application_name, version_name) WHERE application_name IS NOT NULL;
    CREATE UNIQUE INDEX uq_application_versions_unclaimed_version ON dbos.application_versions
        (version_name) WHERE application_name IS NULL;

    CREATE TABLE dbos.queues (
        queue_id text NOT NULL DEFAULT (gen_random_uuid())::text,
        name text NOT NULL,
        concurrency integer,
        worker_concurrency integer,
        rate_limit_max integer,
        rate_limit_period_sec double precision,
        priority_enabled boolean NOT NULL DEFAULT false,
        partition_queue boolean NOT NULL DEFAULT false,
        polling_interval_sec double precision NOT NULL DEFAULT 1.0,
        created_at bigint NOT NULL DEFAULT ((EXTRACT(epoch FROM now()) * 1000.0))::bigint,
        updated_at bigint NOT NULL DEFAULT ((EXTRACT(epoch FROM now()) * 1000.0))::bigint,
        application_name text,
        partition_concurrency integer,
        partition_worker_concurrency integer,
        partition_rate_limit_max integer,
        partition_rate_limit_period_sec double precision,
        CONSTRAINT queues_pkey PRIMARY KEY (queue_id),
        CONSTRAINT queues_name_key UNIQUE (name)
    );

    -- Every message wakes its receiver, whoever inserted it; NOTIFY fires at commit.
    CREATE FUNCTION dbos.notifications_function() RETURNS trigger
        LANGUAGE plpgsql
        SET search_path TO 'pg_catalog', 'pg_temp'
        AS $fn$
    BEGIN
        PERFORM pg_notify('dbos_notifications_channel', NEW.destination_uuid || '::' || NEW.topic);
        RETURN NEW;
    END;
    $fn$;
    CREATE TRIGGER dbos_notifications_trigger AFTER INSERT ON dbos.notifications
        FOR EACH ROW EXECUTE FUNCTION dbos.notifications_function();

    -- Enqueues a workflow from any SQL client, with portable_json inputs. Returns its ID.
    CREATE FUNCTION dbos.enqueue_workflow(
        workflow_name text,
        queue_name text,
        positional_args json[] DEFAULT ARRAY[]::json[],
        named_args json DEFAULT '{}'::json,
        class_name text DEFAULT NULL::text,
        config_name text DEFAULT NULL::text,
        workflow_id text DEFAULT NULL::text,
        app_version text DEFAULT NULL::text,
        timeout_ms bigint DEFAULT NULL::bigint,
        deadline_epoch_ms bigint DEFAULT NULL::bigint,
        deduplication_id text DEFAULT NULL::text,
        priority integer DEFAULT NULL::integer,
        queue_partition_key text DEFAULT NULL::text,
        authenticated_user text DEFAULT NULL::text,
        authenticated_roles text DEFAULT NULL::text,
        delay_until_epoch_ms bigint DEFAULT NULL::bigint,
        application_name text DEFAULT NULL::text
    ) RETURNS text
        LANGUAGE plpgsql
        SET search_path TO 'pg_catalog', 'pg_temp'
        AS $fn$
    DECLARE
        id text := COALESCE(workflow_id, gen_random_uuid()::text);
        now_ms bigint := (EXTRACT(epoch FROM now()) * 1000)::bigint;
    BEGIN
        IF workflow_name IS NULL OR workflow_name = '' THEN
            RAISE EXCEPTION 'Workflow name cannot be null or empty';
        END IF;
        IF queue_name IS NULL OR queue_name = '' THEN
            RAISE EXCEPTION 'Queue name cannot be null or empty';
        END IF;
        IF named_args IS NOT NULL AND jsonb_typeof(named_args::jsonb) <> 'object' THEN
            RAISE EXCEPTION 'Named args must be a JSON object';
        END IF;
        IF workflow_id = '' THEN
            RAISE EXCEPTION 'Workflow ID cannot be an empty string if provided.';
        END IF;
        IF delay_until_epoch_ms < 0 THEN
            RAISE EXCEPTION 'delay_until_epoch_ms must be >= 0';
        END IF;
        INSERT INTO dbos.workflow_status AS ws (
            workflow_uuid, status, name, class_name, config_name, queue_name, deduplication_id,
            priority, queue_partition_key, application_version, created_at, updated_at,
            recovery_attempts, workflow_timeout_ms, workflow_deadline_epoch_ms, parent_workflow_id,
            owner_xid, serialization, authenticated_user, authenticated_roles,
            delay_until_epoch_ms, application_name)
        VALUES (
            id, CASE WHEN delay_until_epoch_ms IS NULL THEN 'ENQUEUED' ELSE 'DELAYED' END,
            workflow_name, class_name, config_name, queue_name, deduplication_id,
            COALESCE(priority, 0), queue_partition_key, app_version, now_ms, now_ms,
            0, timeout_ms, deadline_epoch_ms, NULL,
            gen_random_uuid()::text, 'portable_json', authenticated_user, authenticated_roles,
            delay_until_epoch_ms, application_name)
        ON CONFLICT (workflow_uuid) DO UPDATE SET updated_at = EXCLUDED.updated_at;
        INSERT INTO dbos.workflow_input (workflow_uuid, inputs, retention_timestamp)
        VALUES (id, json_build_object('positionalArgs', positional_args, 'namedArgs', named_args)::text, now_ms)
        ON CONFLICT (workflow_uuid) DO NOTHING;
        RETURN id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'DBOS queue duplicated'
            USING DETAIL = format('Workflow %s with queue %s and deduplication ID %s already exists',
                                  id, queue_name, deduplication_id),
                  ERRCODE = 'unique_violation';
    END;
    $fn$;

    -- Sends a portable_json message to a workflow from any SQL client; idempotent by message_id.
    CREATE FUNCTION dbos.send_message(destination_id text, message json, topic text DEFAULT NULL::text,
                                      message_id text DEFAULT NULL::text) RETURNS void
        LANGUAGE plpgsql
        SET search_path TO 'pg_catalog', 'pg_temp'
        AS $fn$
    BEGIN
        INSERT INTO dbos.notifications (destination_uuid, topic, message, message_uuid, serialization)
        VALUES (destination_id, COALESCE(topic, '__null__topic__'), message,
                COALESCE(message_id, gen_random_uuid()::text), 'portable_json')
        ON CONFLICT (message_uuid) DO NOTHING;
    EXCEPTION WHEN foreign_key_violation THEN
        RAISE EXCEPTION 'DBOS non-existent workflow'
            USING DETAIL = format('Destination workflow %s does not exist', destination_id),
                  ERRCODE = 'foreign_key_violation';
    END;
    $fn$;

    INSERT INTO dbos.dbos_migrations (version) VALUES (125);
END;
$adopt$;
