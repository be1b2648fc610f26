//! A 1 GiB file round-trips through the streaming API with constant memory.
//!
//! Its own test binary, so the peak memory of the process measures this test alone.
//! `DBOS_TEST_LARGE_FILE_MIB` changes the size (default 1024). Where the test cluster's file
//! system has too little room for that (the table and its WAL take about three times the file),
//! the file shrinks to what fits, down to 256 MiB, still twice the memory bound checked below;
//! below that the test fails and says how much room it needs.

mod common;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use common::T;
use dbos_fs::BLOCK_BYTES;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Block `i` of the file: a fixed pattern with `i` stamped at its start.
fn fill_block(i: u64, template: &[u8], out: &mut [u8]) {
    out.copy_from_slice(&template[..out.len()]);
    let stamp = i.to_le_bytes();
    let n = stamp.len().min(out.len());
    out[..n].copy_from_slice(&stamp[..n]);
}

/// Produces the file's bytes without holding them.
struct Source {
    template: Vec<u8>,
    len: u64,
    pos: u64,
}

impl AsyncRead for Source {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let block = BLOCK_BYTES as u64;
        while buf.remaining() > 0 && self.pos < self.len {
            let i = self.pos / block;
            let in_block = (self.pos % block) as usize;
            let n = (BLOCK_BYTES - in_block)
                .min(buf.remaining())
                .min((self.len - self.pos) as usize);
            let mut tmp = vec![0u8; BLOCK_BYTES];
            fill_block(i, &self.template, &mut tmp);
            buf.put_slice(&tmp[in_block..in_block + n]);
            self.pos += n as u64;
        }
        Poll::Ready(Ok(()))
    }
}

/// Checks the bytes it is given against the expected file.
struct Check {
    template: Vec<u8>,
    pos: u64,
    expected: Vec<u8>,
}

impl AsyncWrite for Check {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let block = BLOCK_BYTES as u64;
        let mut done = 0;
        while done < data.len() {
            let i = self.pos / block;
            let in_block = (self.pos % block) as usize;
            let n = (BLOCK_BYTES - in_block).min(data.len() - done);
            let mut expected = std::mem::take(&mut self.expected);
            expected.resize(BLOCK_BYTES, 0);
            fill_block(i, &self.template, &mut expected);
            if data[done..done + n] != expected[in_block..in_block + n] {
                return Poll::Ready(Err(io::Error::other(format!(
                    "byte mismatch in block {i} at offset {}",
                    self.pos
                ))));
            }
            self.expected = expected;
            self.pos += n as u64;
            done += n;
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Peak resident memory of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Free MiB on the file system of the test clusters' data directories.
fn free_mib_for_clusters() -> u64 {
    let st = nix::sys::statvfs::statvfs(&std::env::temp_dir()).expect("statvfs of the temp dir");
    (st.blocks_available() as u64 * st.fragment_size() as u64) >> 20
}

/// Peak memory may grow by less than this while streaming.
const MEMORY_BOUND_MIB: u64 = 128;

#[tokio::test]
async fn a_one_gib_file_round_trips_streamed_with_constant_memory() {
    let wanted: u64 = std::env::var("DBOS_TEST_LARGE_FILE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let free = free_mib_for_clusters();
    let least = 2 * MEMORY_BOUND_MIB;
    assert!(
        3 * least <= free || wanted < least,
        "the large-file test needs {} MiB free under {} and has {free} MiB",
        3 * least,
        std::env::temp_dir().display()
    );
    let mib = wanted.min(free / 3);
    if mib < wanted {
        eprintln!(
            "NOTICE: only {free} MiB free under {}: streaming a {mib} MiB file instead of {wanted} MiB",
            std::env::temp_dir().display()
        );
    }
    // Not a multiple of the block size: the last block is partial.
    let len = (mib << 20) + 12_345;
    let t = T::new().await;
    let template: Vec<u8> = (0..BLOCK_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let before = peak_rss_kib();

    let mut tx = t.tx().await;
    let st = t.fs.create(&mut tx, &t.root, "/big", 0o644).await.unwrap();
    let source = Source {
        template: template.clone(),
        len,
        pos: 0,
    };
    let written =
        t.fs.write_from(&mut tx, &t.root, st.ino, 0, source)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written, len);

    let mut c = t.pool.acquire().await.unwrap();
    assert_eq!(t.fs.stat(&mut c, &t.root, "/big").await.unwrap().size, len);
    let mut check = Check {
        template,
        pos: 0,
        expected: Vec::new(),
    };
    let read =
        t.fs.read_to(&mut c, &t.root, st.ino, &mut check)
            .await
            .unwrap();
    assert_eq!((read, check.pos), (len, len));

    let grew_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        grew_mib < MEMORY_BOUND_MIB,
        "streaming {mib} MiB grew the peak memory by {grew_mib} MiB"
    );
    // Deleting it frees every block.
    t.fs.unlink(&mut c, &t.root, "/big").await.unwrap();
    assert_eq!(t.count("SELECT count(*) FROM fs.blocks").await, 0);
}
