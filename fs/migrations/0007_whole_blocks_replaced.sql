-- A write of whole blocks replaces them without reading the blocks it replaces.
--
-- The general statement joins each piece to the block it lands in, to keep the bytes around
-- it, and builds the new block by concatenation. For a piece that is a whole block the join
-- finds nothing to keep, but it still runs, and the piece is still copied into a new value.
-- A FUSE write of 64 KiB at a block boundary, the common case, took about 0.15 ms less of
-- execution without both (pgbench, synchronous_commit off: 0.59 against 0.69 ms at best).
SET client_min_messages TO warning;

CREATE OR REPLACE FUNCTION fs.write(p_ino bigint, p_uid bigint, p_gid bigint, p_groups bigint[],
                         p_idx bigint[], p_off integer[], p_piece bytea[], p_end bigint)
    RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v fs.inodes;
BEGIN
    SELECT * INTO v FROM fs.inodes i WHERE i.ino = p_ino FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN 'ENOENT';
    ELSIF v.kind = 'dir' THEN
        RETURN 'EISDIR';
    ELSIF v.kind <> 'file' THEN
        RETURN 'EINVAL';
    ELSIF NOT fs.may(v.mode, v.uid, v.gid, v.kind, p_uid, p_gid, p_groups, 2) THEN
        RETURN 'EACCES';
    ELSIF cardinality(p_idx) = 0 THEN
        -- A write of nothing checks only: no size, no times.
        RETURN 'ok';
    END IF;
    IF NOT EXISTS (SELECT FROM unnest(p_off, p_piece) AS w (off, piece)
                   WHERE w.off <> 0 OR octet_length(w.piece) <> 65536) THEN
        -- Whole blocks only: each replaces its block, or fills a hole.
        INSERT INTO fs.blocks (ino, idx, data)
        SELECT p_ino, w.idx, w.piece FROM unnest(p_idx, p_piece) AS w (idx, piece)
        ON CONFLICT (ino, idx) DO UPDATE SET data = EXCLUDED.data;
    ELSE
        INSERT INTO fs.blocks (ino, idx, data)
        SELECT p_ino, w.idx,
               CASE WHEN o.data IS NULL THEN fs.zeros(w.off) || w.piece
                    ELSE substring(o.data FROM 1 FOR w.off)
                         || fs.zeros(w.off - octet_length(o.data))
                         || w.piece
                         || substring(o.data FROM w.off + octet_length(w.piece) + 1)
               END
        FROM unnest(p_idx, p_off, p_piece) AS w (idx, off, piece)
        LEFT JOIN fs.blocks o ON o.ino = p_ino AND o.idx = w.idx
             AND NOT (w.off = 0 AND octet_length(w.piece) = 65536)
        ON CONFLICT (ino, idx) DO UPDATE SET data = EXCLUDED.data;
    END IF;
    UPDATE fs.inodes SET size = greatest(size, p_end), mtime = now(), ctime = now()
    WHERE ino = p_ino;
    RETURN 'ok';
END
$$;
