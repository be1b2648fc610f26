-- A write of nothing is checked by fs.write like any other (no such inode, a directory, a
-- symbolic link, no permission) and then changes nothing: neither the size nor the times.
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
    UPDATE fs.inodes SET size = greatest(size, p_end), mtime = now(), ctime = now()
    WHERE ino = p_ino;
    RETURN 'ok';
END
$$;
