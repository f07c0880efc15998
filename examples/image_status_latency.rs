//! Calls ImageStatus on a running daemon's socket, one call at a time, and
//! prints one JSON line of latency figures: the client half of
//! `benches/metrics_overhead.sh`, which compares a daemon with and without
//! `--metrics-addr` (and with a scraper polling it).
//!
//! Optionally scrapes `--scrape-url` every `--scrape-interval-ms` on a
//! thread of its own while the calls run, to measure a scraped daemon.
//!
//! ```text
//! cargo run --release --example image_status_latency -- \
//!     --socket /tmp/d/cri-imaged.sock --calls 20000 --image docker.io/library/busybox:1.36
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

use cri_imaged::api::client;
use cri_imaged::api::proto::runtime::v1 as cri;

#[derive(Parser, Debug)]
struct Arguments {
    #[arg(long)]
    socket: PathBuf,
    /// Timed calls (after `--warmup-calls` untimed ones).
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    #[arg(long, default_value_t = 1_000)]
    warmup_calls: usize,
    /// The image asked about (present or not, the lookup runs).
    #[arg(long, default_value = "docker.io/library/busybox:1.36")]
    image: String,
    /// `http://HOST:PORT/metrics` to scrape while the calls run.
    #[arg(long)]
    scrape_url: Option<String>,
    #[arg(long, default_value_t = 100)]
    scrape_interval_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments = Arguments::parse();
    let mut images = client::image_client(&arguments.socket).await?;
    let request = cri::ImageStatusRequest {
        image: Some(cri::ImageSpec {
            image: arguments.image.clone(),
            ..Default::default()
        }),
        verbose: false,
    };
    for _ in 0..arguments.warmup_calls {
        images.image_status(request.clone()).await?;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = arguments.scrape_url.clone().map(|url| {
        let stop = stop.clone();
        let interval = Duration::from_millis(arguments.scrape_interval_ms);
        std::thread::spawn(move || {
            let mut scrapes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut response = ureq::get(&url).call().expect("scrape answers");
                let _ = response.body_mut().read_to_string().expect("scrape body");
                scrapes += 1;
                std::thread::sleep(interval);
            }
            scrapes
        })
    });
    let mut latencies_ns: Vec<u64> = Vec::with_capacity(arguments.calls);
    let started = Instant::now();
    for _ in 0..arguments.calls {
        let call = Instant::now();
        images.image_status(request.clone()).await?;
        latencies_ns.push(call.elapsed().as_nanos() as u64);
    }
    let total = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.map(|thread| thread.join().unwrap_or(0));
    latencies_ns.sort_unstable();
    let percentile = |fraction: f64| {
        let index = ((latencies_ns.len() as f64 - 1.0) * fraction).round() as usize;
        latencies_ns[index] as f64 / 1000.0
    };
    let mean_us = latencies_ns.iter().sum::<u64>() as f64 / latencies_ns.len() as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "calls": arguments.calls,
            "mean_us": mean_us,
            "p50_us": percentile(0.50),
            "p90_us": percentile(0.90),
            "p99_us": percentile(0.99),
            "calls_per_second": arguments.calls as f64 / total.as_secs_f64(),
            "scrapes": scrapes,
        })
    );
    Ok(())
}
