//! The pure part of path resolution: splitting and checking paths and names, with no database.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dbos_fs::path;

fn paths(c: &mut Criterion) {
    let short = "/home/alice/notes.txt";
    let typical = "/srv/data/projects/dbos/fs/src/ops.rs";
    let messy = "//srv/./data//projects/../projects/dbos/./fs/src/";
    let deep: String = (0..64).map(|i| format!("/dir{i:02}")).collect();
    let mut g = c.benchmark_group("fs_path_parse");
    for (name, p) in [
        ("short", short),
        ("typical", typical),
        ("messy", messy),
        ("deep_64", deep.as_str()),
    ] {
        g.throughput(Throughput::Bytes(p.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| path::parse(black_box(p)).map(|x| x.components.len()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("fs_path_check");
    g.bench_function("name_ok", |b| {
        b.iter(|| path::check_name(black_box("report-2026-q1.csv")))
    });
    let long = "n".repeat(256);
    g.bench_function("name_too_long", |b| {
        b.iter(|| path::check_name(black_box(&long)).is_err())
    });
    g.bench_function("target", |b| {
        b.iter(|| path::check_target(black_box("../shared/lib/libx.so")))
    });
    g.finish();
}

criterion_group!(benches, paths);
criterion_main!(benches);
