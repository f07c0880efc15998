//! The cost the metrics add to every request, measured without the socket's
//! noise: recording one RPC (method label check, counter and histogram
//! lookup), recording one pull, and encoding a populated registry (what a
//! scrape pays, store gauges aside). `benches/metrics_overhead.sh` measures
//! the same end to end over the socket.
//!
//! `cargo bench --bench metrics`.

use std::hint::black_box;
use std::time::Duration;

use cri_imaged::metrics::{Metrics, PullResult};
use criterion::{Criterion, criterion_group, criterion_main};

fn recording(criterion: &mut Criterion) {
    let metrics = Metrics::new();
    criterion.bench_function("record_rpc", |bench| {
        bench.iter(|| {
            metrics.record_rpc(
                black_box("/runtime.v1.ImageService/ImageStatus"),
                black_box("OK"),
                black_box(Duration::from_micros(80)),
            );
        });
    });
    criterion.bench_function("record_pull_started_and_finished", |bench| {
        bench.iter(|| {
            metrics.record_pull_started(black_box("registry.example"));
            metrics.record_pull_finished(
                black_box("registry.example"),
                PullResult::Ok,
                black_box(Duration::from_millis(1500)),
            );
        });
    });
}

fn encoding(criterion: &mut Criterion) {
    let metrics = Metrics::new();
    // A busy node: every CRI method answered, pulls from a few registries
    // with every result.
    for method in [
        "ImageStatus",
        "ListImages",
        "PullImage",
        "RemoveImage",
        "ImageFsInfo",
    ] {
        for code in ["OK", "NOT_FOUND", "INTERNAL"] {
            metrics.record_rpc(
                &format!("/runtime.v1.ImageService/{method}"),
                code,
                Duration::from_millis(3),
            );
        }
    }
    for registry in ["docker.io", "registry.k8s.io", "quay.io", "ghcr.io"] {
        for result in PullResult::ALL {
            metrics.record_pull_started(registry);
            metrics.record_pull_finished(registry, result, Duration::from_secs(4));
        }
        metrics.record_pull_bytes(registry, 123_456_789, 1_234_567);
    }
    criterion.bench_function("encode", |bench| {
        bench.iter(|| black_box(metrics.encode()));
    });
}

criterion_group!(benches, recording, encoding);
criterion_main!(benches);
