//! Closed-loop load: N connections, each sending its next request as soon as
//! the previous answer is read. Latency goes into one HdrHistogram per
//! connection, merged at the end.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
}

/// What one round measured.
pub struct Summary {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl Summary {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p99_us(&self) -> f64 {
        self.latency_us.value_at_quantile(0.99) as f64
    }

    pub fn line(&self, label: &str) -> String {
        let h = &self.latency_us;
        format!(
            "{label}: {:.0} req/s, ok {}, errors {}, tp50 {} us, tp99 {} us, tp999 {} us, max {} us",
            self.throughput(),
            self.ok,
            self.errors,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        )
    }

    /// The round with the median throughput.
    pub fn median(rounds: &mut [Summary]) -> &Summary {
        rounds.sort_by(|a, b| a.throughput().total_cmp(&b.throughput()));
        &rounds[rounds.len() / 2]
    }
}

struct Target {
    address: String,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
    anyhow::ensure!(uri.scheme_str() == Some("http"), "only http:// URLs are supported");
    let authority = uri.authority().context("URL has no host")?;
    let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Ok(Target { address, host: authority.to_string(), path })
}

pub async fn run_get(url: &str, plan: &LoadPlan) -> anyhow::Result<Summary> {
    let target = std::sync::Arc::new(parse_url(url)?);
    let started = Instant::now();
    let measure_from = started + plan.warmup;
    let stop_at = measure_from + plan.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.connections {
        let target = std::sync::Arc::clone(&target);
        tasks.spawn(async move { connection(&target, measure_from, stop_at).await });
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ok, mut errors) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        let (histogram, good, bad) = result??;
        latency_us.add(&histogram)?;
        ok += good;
        errors += bad;
    }
    Ok(Summary { ok, errors, elapsed: plan.duration, latency_us })
}

/// One connection's loop; reconnects after a connection error.
async fn connection(
    target: &Target,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ok, mut errors) = (0u64, 0u64);
    'connect: while Instant::now() < stop_at {
        let stream = match TcpStream::connect(&target.address).await {
            Ok(stream) => stream,
            Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(conn);
        loop {
            let now = Instant::now();
            if now >= stop_at {
                break 'connect;
            }
            let request =
                Request::get(target.path.as_str()).header("host", target.host.as_str()).body(Empty::<Bytes>::new())?;
            let sent = Instant::now();
            let outcome = match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    response.into_body().collect().await.map(|_| status.is_success())
                }
                Err(_) => {
                    errors += 1;
                    driver.abort();
                    continue 'connect;
                }
            };
            let took = sent.elapsed();
            if sent < measure_from || sent >= stop_at {
                continue;
            }
            match outcome {
                Ok(true) => {
                    ok += 1;
                    histogram.saturating_record(took.as_micros() as u64);
                }
                _ => errors += 1,
            }
        }
    }
    Ok((histogram, ok, errors))
}
