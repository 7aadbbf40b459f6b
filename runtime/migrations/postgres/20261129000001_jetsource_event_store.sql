-- jetsource's PostgreSQL event store: the events, the snapshots, the relay's checkpoints and
-- the append function. Every object is created in the first schema of the search_path.

-- One row per event. `position` is the store-wide order (gaps where transactions rolled back);
-- (aggregate_type, aggregate_id, sequence) numbers each aggregate's events 1, 2, 3, ...
-- `transaction_id` tells the relay which transaction wrote the row, so it can publish the events
-- of each committed transaction once, whatever order transactions commit in.
CREATE TABLE jetsource_events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    aggregate_type  TEXT   NOT NULL,
    aggregate_id    TEXT   NOT NULL,
    sequence        BIGINT NOT NULL CHECK (sequence > 0),
    event_id        UUID   NOT NULL,
    name            TEXT   NOT NULL,
    version         INTEGER NOT NULL,
    codec           TEXT   NOT NULL,
    payload         BYTEA  NOT NULL,
    -- Unix time in nanoseconds, as the wire format carries it (timestamptz keeps microseconds).
    occurred_at_ns  BIGINT NOT NULL,
    correlation_id  TEXT   NOT NULL,
    causation_id    TEXT,
    command_id      TEXT,
    headers         JSONB  NOT NULL DEFAULT '{}',
    transaction_id  XID8   NOT NULL DEFAULT pg_current_xact_id(),
    -- Loads read this index from the requested sequence on: their cost follows the aggregate.
    CONSTRAINT jetsource_events_aggregate_sequence UNIQUE (aggregate_type, aggregate_id, sequence)
);

-- First outcomes of idempotent commands.
CREATE INDEX jetsource_events_command
    ON jetsource_events (aggregate_type, aggregate_id, command_id)
    WHERE command_id IS NOT NULL;

-- The relay's scan: the transactions that committed since its last window.
CREATE INDEX jetsource_events_transaction ON jetsource_events (transaction_id);

-- The latest snapshot of each aggregate.
CREATE TABLE jetsource_snapshots (
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    version         BIGINT  NOT NULL,
    position        BIGINT  NOT NULL,
    state           BYTEA   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Where each relay is: the events of transactions visible in `published_through` are published;
-- a window open up to `window_to` is published up to `window_position`. `clean`: the last active
-- relay stopped after recording everything it published (else its successor checks the stream).
CREATE TABLE jetsource_relays (
    name               TEXT PRIMARY KEY,
    published_through  PG_SNAPSHOT NOT NULL,
    window_to          PG_SNAPSHOT,
    window_position    BIGINT NOT NULL DEFAULT 0,
    published          BIGINT NOT NULL DEFAULT 0,
    clean              BOOLEAN NOT NULL DEFAULT false,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Appends events to one aggregate if its version is `p_expected` (NULL: any), all or nothing.
-- A command id the aggregate has seen returns that command's first outcome and appends nothing.
-- Returns one row: outcome ('appended', 'duplicate', 'conflict' or 'empty'), the first and last
-- sequence (for a conflict both are the version found), and the position of the last event.
CREATE FUNCTION jetsource_append(
    p_aggregate_type  TEXT,
    p_aggregate_id    TEXT,
    p_expected        BIGINT,
    p_command_id      TEXT,
    p_event_ids       UUID[],
    p_names           TEXT[],
    p_versions        INTEGER[],
    p_codecs          TEXT[],
    p_payloads        BYTEA[],
    p_occurred_at_ns  BIGINT[],
    p_correlation_ids TEXT[],
    p_causation_ids   TEXT[],
    p_headers         TEXT[]
) RETURNS TABLE (outcome TEXT, first_sequence BIGINT, last_sequence BIGINT, last_position BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    current BIGINT;
BEGIN
    -- Appends to one aggregate take turns until the appending transaction ends, so the version
    -- read next is the newest committed one (each statement of this function sees the commits
    -- that happened before it started). Inside a caller's transaction the turn lasts until the
    -- caller commits or rolls back.
    PERFORM pg_advisory_xact_lock(jetsource_aggregate_lock(p_aggregate_type, p_aggregate_id));
    IF p_command_id IS NOT NULL THEN
        RETURN QUERY
            SELECT 'duplicate', min(e.sequence), max(e.sequence), max(e.position)
            FROM jetsource_events e
            WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id
              AND e.command_id = p_command_id
            HAVING count(*) > 0;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    IF coalesce(cardinality(p_event_ids), 0) = 0 THEN
        RETURN QUERY SELECT 'empty', 0::BIGINT, 0::BIGINT, 0::BIGINT;
        RETURN;
    END IF;
    -- The newest sequence, one step down the unique index whatever the table's statistics.
    -- (`max(sequence)` is planned as a scan of all the aggregate's rows while the table has no
    -- statistics, and each connection keeps that plan until the table is analyzed: appends
    -- then slow down as the aggregate grows.)
    SELECT e.sequence INTO current
    FROM jetsource_events e
    WHERE e.aggregate_type = p_aggregate_type AND e.aggregate_id = p_aggregate_id
    ORDER BY e.sequence DESC
    LIMIT 1;
    current := coalesce(current, 0);
    IF p_expected IS NOT NULL AND p_expected <> current THEN
        RETURN QUERY SELECT 'conflict', current, current, 0::BIGINT;
        RETURN;
    END IF;
    -- One event, the common case: a plain insert, much cheaper for the server than the
    -- unnest and the sort below.
    IF cardinality(p_event_ids) = 1 THEN
        INSERT INTO jetsource_events (aggregate_type, aggregate_id, sequence, event_id, name,
            version, codec, payload, occurred_at_ns, correlation_id, causation_id, command_id,
            headers)
        VALUES (p_aggregate_type, p_aggregate_id, current + 1, p_event_ids[1], p_names[1],
            p_versions[1], p_codecs[1], p_payloads[1], p_occurred_at_ns[1],
            p_correlation_ids[1], p_causation_ids[1], p_command_id, p_headers[1]::JSONB)
        RETURNING position INTO last_position;
        outcome := 'appended';
        first_sequence := current + 1;
        last_sequence := current + 1;
        RETURN NEXT;
        RETURN;
    END IF;
    RETURN QUERY
        WITH inserted AS (
            INSERT INTO jetsource_events (aggregate_type, aggregate_id, sequence, event_id, name,
                version, codec, payload, occurred_at_ns, correlation_id, causation_id, command_id,
                headers)
            SELECT p_aggregate_type, p_aggregate_id, current + u.ord, u.event_id, u.name,
                u.version, u.codec, u.payload, u.occurred_at_ns, u.correlation_id, u.causation_id,
                p_command_id, u.headers::JSONB
            FROM unnest(p_event_ids, p_names, p_versions, p_codecs, p_payloads, p_occurred_at_ns,
                p_correlation_ids, p_causation_ids, p_headers)
                WITH ORDINALITY AS u(event_id, name, version, codec, payload, occurred_at_ns,
                    correlation_id, causation_id, headers, ord)
            ORDER BY u.ord
            RETURNING position
        )
        SELECT 'appended', current + 1, current + cardinality(p_event_ids), max(i.position)
        FROM inserted i;
END
$$;

-- The advisory lock key of one aggregate's appends (a 64-bit hash; a collision only makes two
-- aggregates take turns).
CREATE FUNCTION jetsource_aggregate_lock(p_aggregate_type TEXT, p_aggregate_id TEXT)
RETURNS BIGINT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended(p_aggregate_type || '/' || p_aggregate_id, 7405327)
$$;

-- The advisory lock key that makes one relay of a name the active one (session-scoped: it goes
-- with the relay's connection).
CREATE FUNCTION jetsource_relay_lock(p_relay TEXT)
RETURNS BIGINT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended('jetsource relay/' || p_relay, 7405327)
$$;
