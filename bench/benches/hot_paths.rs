//! Micro-benchmarks of hot in-process paths.
//!
//! - `step_output`: encoding and decoding a step's output with `portable_json` (the codec every
//!   checkpoint goes through, so DBOS's own tools can read it) versus `rkyv` (a zero-copy binary
//!   format, a candidate for payloads that never need to be read by SQL or other languages).
//!   Payloads: a number, a small record, and 64 KiB of bytes.
//! - `commit_batch`: the work a group-commit flush does before its round trip: splitting the
//!   queued checkpoints into column arrays and binding them to the one batched statement.
//!
//! `cargo bench -p dbos-bench --bench hot_paths`; criterion writes its report under
//! `target/criterion/`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use dbos_services::workflow::{codec, committer_bench};
use serde::{Deserialize, Serialize};

/// A step output of the kind applications record: a few fields and a short list.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
struct Record {
    id: u64,
    name: String,
    status: String,
    amount_cents: i64,
    tags: Vec<String>,
    scores: Vec<f64>,
}

/// A binary step output (a file block, an image), 64 KiB.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
struct Blob {
    bytes: Vec<u8>,
}

fn record() -> Record {
    Record {
        id: 4_211_337,
        name: "order 4211337 for customer 90210".to_owned(),
        status: "SHIPPED".to_owned(),
        amount_cents: 129_999,
        tags: (0..8).map(|i| format!("tag-{i}")).collect(),
        scores: (0..16).map(|i| f64::from(i) * 0.125).collect(),
    }
}

fn blob() -> Blob {
    Blob {
        bytes: (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    }
}

/// Encodes and decodes one payload both ways, checking once that each round-trips.
fn codec_pair<T>(c: &mut Criterion, name: &str, value: &T)
where
    T: Serialize
        + for<'de> Deserialize<'de>
        + PartialEq
        + std::fmt::Debug
        + rkyv::Archive
        + for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    T::Archived: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>
        + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>,
{
    let json = codec::encode(value).expect("the payload encodes as JSON");
    let bin = rkyv::to_bytes::<rkyv::rancor::Error>(value).expect("the payload encodes with rkyv");
    assert_eq!(&codec::decode::<T>(&json).expect("JSON decodes"), value);
    assert_eq!(
        &rkyv::from_bytes::<T, rkyv::rancor::Error>(&bin).expect("rkyv decodes"),
        value
    );

    let mut g = c.benchmark_group("step_output/encode");
    g.throughput(Throughput::Elements(1));
    g.bench_with_input(BenchmarkId::new("portable_json", name), value, |b, v| {
        b.iter(|| codec::encode(v).expect("encodes"))
    });
    g.bench_with_input(BenchmarkId::new("rkyv", name), value, |b, v| {
        b.iter(|| rkyv::to_bytes::<rkyv::rancor::Error>(v).expect("encodes"))
    });
    g.finish();

    let mut g = c.benchmark_group("step_output/decode");
    g.throughput(Throughput::Elements(1));
    g.bench_with_input(BenchmarkId::new("portable_json", name), &json, |b, j| {
        b.iter(|| codec::decode::<T>(j).expect("decodes"))
    });
    g.bench_with_input(BenchmarkId::new("rkyv", name), &bin, |b, bytes| {
        b.iter(|| rkyv::from_bytes::<T, rkyv::rancor::Error>(bytes).expect("decodes"))
    });
    g.finish();
    println!(
        "step_output/{name}: portable_json {} bytes, rkyv {} bytes",
        json.len(),
        bin.len()
    );
}

fn step_output(c: &mut Criterion) {
    codec_pair(c, "u32", &7u32);
    codec_pair(c, "record", &record());
    codec_pair(c, "bytes_64KiB", &blob());
}

fn commit_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit_batch/build");
    // A 3-step no-op workflow's output, as recorded.
    let output = codec::encode(&2u32).expect("encodes");
    for n in [1usize, 32, 256] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("checkpoints", n), &n, |b, &n| {
            b.iter_batched(
                || committer_bench::checkpoints(n, &output),
                |requests| {
                    let carried = committer_bench::build(requests);
                    assert_eq!(carried, n);
                    carried
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = step_output, commit_batch
}
criterion_main!(benches);
