//! The load: N connections, each doing M ping-pong round trips of S bytes,
//! every echoed byte checked.

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub conns: usize,
    pub size: usize,
    pub round_trips_per_conn: usize,
}

pub struct Outcome {
    pub round_trips: u64,
    pub round_trips_per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Runs one scenario against `addr`. Any error or wrong byte fails it.
pub async fn ping_pong(addr: SocketAddr, s: Scenario) -> Result<Outcome> {
    // Connect everyone first, so that all connections are open at once.
    let mut streams = Vec::with_capacity(s.conns);
    for _ in 0..s.conns {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let started = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            tokio::spawn(round_trips(stream, s.size, s.round_trips_per_conn, i as u64))
        })
        .collect();
    let mut all = Histogram::<u64>::new(3)?;
    for task in tasks {
        all.add(task.await??)?;
    }
    let elapsed = started.elapsed();
    Ok(Outcome {
        round_trips: all.len(),
        round_trips_per_s: all.len() as f64 / elapsed.as_secs_f64(),
        p50: Duration::from_nanos(all.value_at_quantile(0.5)),
        p99: Duration::from_nanos(all.value_at_quantile(0.99)),
    })
}

async fn round_trips(
    mut stream: TcpStream,
    size: usize,
    count: usize,
    seed: u64,
) -> Result<Histogram<u64>> {
    let mut latencies = Histogram::<u64>::new(3)?;
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size];
    for _ in 0..count {
        fill(&mut out, &mut rng);
        let t = Instant::now();
        one_round_trip(&mut stream, &out, &mut back).await?;
        latencies.record(t.elapsed().as_nanos() as u64)?;
    }
    Ok(latencies)
}

/// Writes `out` while reading the echo into `back` (a large message would
/// otherwise fill both directions' buffers), then compares.
async fn one_round_trip(stream: &mut TcpStream, out: &[u8], back: &mut [u8]) -> Result<()> {
    let (mut reader, mut writer) = stream.split();
    let (wrote, read) = tokio::join!(writer.write_all(out), reader.read_exact(back));
    wrote?;
    read?;
    if back != out {
        bail!("the echo differs from what was sent");
    }
    Ok(())
}

/// Opens `n` connections and has each echo once; returns them, still open.
pub async fn open_echoing(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    // Connect in waves, so that the listen backlog never overflows.
    const WAVE: usize = 500;
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        let wave: Vec<_> = (0..WAVE.min(n - streams.len()))
            .map(|_| {
                tokio::spawn(async move {
                    let mut stream = TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    one_round_trip(&mut stream, b"hello", &mut [0u8; 5]).await?;
                    anyhow::Ok(stream)
                })
            })
            .collect();
        for task in wave {
            streams.push(task.await??);
        }
    }
    Ok(streams)
}

/// One more round trip on every held connection, all at once; returns how
/// many failed.
pub async fn echo_on_all(streams: Vec<TcpStream>) -> Result<(usize, Vec<TcpStream>)> {
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let ok = one_round_trip(&mut stream, b"again", &mut [0u8; 5]).await.is_ok();
                (ok, stream)
            })
        })
        .collect();
    let (mut errors, mut kept) = (0, Vec::new());
    for task in tasks {
        let (ok, stream) = task.await?;
        errors += usize::from(!ok);
        kept.push(stream);
    }
    Ok((errors, kept))
}

fn fill(buf: &mut [u8], rng: &mut u64) {
    for byte in buf {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *byte = (*rng >> 24) as u8;
    }
}

/// `clients` at once, each connecting, doing one round trip of `size`
/// bytes, half-closing and closing, again and again for `how_long`;
/// returns how many connections were served. Any error fails it.
pub async fn short_connections(
    addr: SocketAddr,
    clients: usize,
    size: usize,
    how_long: Duration,
) -> Result<u64> {
    let deadline = Instant::now() + how_long;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(async move {
                let (mut rng, mut served) = ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, 0);
                let (mut out, mut back) = (vec![0u8; size], vec![0u8; size]);
                while Instant::now() < deadline {
                    let mut stream = TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    fill(&mut out, &mut rng);
                    one_round_trip(&mut stream, &out, &mut back).await?;
                    stream.shutdown().await?;
                    served += 1;
                }
                anyhow::Ok(served)
            })
        })
        .collect();
    let mut served = 0;
    for task in tasks {
        served += task.await??;
    }
    Ok(served)
}
