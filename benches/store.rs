//! Store throughput next to a plain file copy: puts and gets one large file and prints MiB/s,
//! the ratio to `std::fs::copy` + fsync of the same bytes on the same file system, and the
//! process's peak RSS. Then many small durable puts from concurrent threads, in puts/s (what
//! group commit is for).
//!
//! `DFS_BENCH_SIZE` sets the file size in MiB (default 1024); `DFS_BENCH_DIR` the directory to
//! work in (default: a temp dir); `DFS_BENCH_SMALL_PUTS` the number of 4 KiB puts (default
//! 10,000, from [`SMALL_THREADS`] threads); `DFS_BENCH_ONLY=large` or `small` runs one part.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::Instant;

use dfs::store::Store;

const MIB: u64 = 1 << 20;

/// Size of each small put.
const SMALL_SIZE: usize = 4096;
/// Threads putting small files at once (as many clients as the cluster bench's small puts).
const SMALL_THREADS: usize = 32;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Writes `size_mib` MiB of incompressible bytes, one MiB at a time.
fn make_source(path: &Path, size_mib: u64) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut xof = blake3::Hasher::new().update(b"dfs bench").finalize_xof();
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..size_mib {
        xof.fill(&mut buf);
        out.write_all(&buf)?;
    }
    out.into_inner()?.sync_all()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

type Times = [Vec<f64>; 5];

/// Plain copy with fsync (the bar of a put), then a plain read of the copy (the bar of a get).
fn plain(src: &Path, copy: &Path, times: &mut Times) -> io::Result<()> {
    let (r, s) = timed(|| -> io::Result<()> {
        std::fs::copy(src, copy)?;
        File::open(copy)?.sync_all()
    });
    r?;
    times[0].push(s);
    let (r, s) = timed(|| io::copy(&mut File::open(copy)?, &mut io::sink()));
    r?;
    times[1].push(s);
    std::fs::remove_file(copy)
}

/// A put, a verified get, and a put of the same bytes under another key (all deduped).
fn stored(
    store: &Store,
    src: &Path,
    round: usize,
    size_mib: u64,
    times: &mut Times,
) -> Result<(), Box<dyn std::error::Error>> {
    let key = format!("bench {round}");
    let (r, s) = timed(|| store.put(&key, File::open(src)?));
    assert_eq!(r?.size, size_mib * MIB);
    times[2].push(s);
    let (r, s) = timed(|| -> Result<u64, Box<dyn std::error::Error>> {
        let mut reader = store.get(&key)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0;
        loop {
            let k = reader.read(&mut buf)?;
            if k == 0 {
                return Ok(n);
            }
            n += k as u64;
        }
    });
    assert_eq!(r?, size_mib * MIB);
    times[3].push(s);
    let (r, s) = timed(|| store.put("dedup", File::open(src)?));
    r?;
    times[4].push(s);
    store.delete(&key)?;
    store.delete("dedup")?;
    store.gc()?;
    Ok(())
}

/// `n` durable puts of distinct 4 KiB files under distinct keys, from [`SMALL_THREADS`]
/// threads into a fresh store; then reopens it and checks a sample. Returns puts/s.
fn small_puts(dir: &Path, n: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let store_dir = dir.join("small");
    let author = libp2p::identity::Keypair::generate_ed25519();
    let store = Store::open(&store_dir, author.clone())?;
    let file = |i: usize| -> Vec<u8> {
        let mut b = vec![0u8; SMALL_SIZE];
        blake3::Hasher::new()
            .update(&(i as u64).to_le_bytes())
            .finalize_xof()
            .fill(&mut b);
        b
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (r, s) = timed(|| {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..SMALL_THREADS)
                .map(|_| {
                    let (store, next) = (&store, &next);
                    scope.spawn(move || -> Result<(), dfs::store::StoreError> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= n {
                                return Ok(());
                            }
                            store.put(&format!("small {i}"), &file(i)[..])?;
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("put thread panicked"))
        })
    });
    r?;
    drop(store);
    let store = Store::open(&store_dir, author)?;
    for i in (0..n).step_by((n / 100).max(1)) {
        let mut got = Vec::new();
        store.get(&format!("small {i}"))?.read_to_end(&mut got)?;
        assert_eq!(got, file(i), "small put {i}");
    }
    assert_eq!(store.record_count(), n as u64);
    drop(store);
    std::fs::remove_dir_all(&store_dir)?;
    Ok(n as f64 / s)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let only = std::env::var("DFS_BENCH_ONLY").unwrap_or_default();
    let small_n: usize = std::env::var("DFS_BENCH_SMALL_PUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
        .max(1);
    if only == "small" {
        let base = std::env::var_os("DFS_BENCH_DIR").map(std::path::PathBuf::from);
        let dir = match base {
            Some(d) => tempfile::tempdir_in(d)?,
            None => tempfile::tempdir()?,
        };
        return print_small(dir.path(), small_n);
    }
    let size_mib: u64 = std::env::var("DFS_BENCH_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let tmp;
    let dir = match std::env::var_os("DFS_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => {
            tmp = tempfile::tempdir()?;
            tempfile::tempdir_in(tmp.path())?
        }
    };
    let src = dir.path().join("source");
    make_source(&src, size_mib)?;
    let mib = size_mib as f64;

    let rounds: usize = std::env::var("DFS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let author = libp2p::identity::Keypair::generate_ed25519();
    let store = Store::open(&dir.path().join("store"), author)?;
    let copy = dir.path().join("copy");
    let mut times: Times = Default::default();
    // Rounds alternate which goes first, the plain copy or the store, so that neither always
    // meets a disk still busy with the other's writes.
    for round in 0..rounds {
        if round % 2 == 0 {
            plain(&src, &copy, &mut times)?;
            stored(&store, &src, round, size_mib, &mut times)?;
        } else {
            stored(&store, &src, round, size_mib, &mut times)?;
            plain(&src, &copy, &mut times)?;
        }
    }
    // (median, best) seconds of each operation.
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    let [copy_s, read_s, put_s, get_s, dedup_s] = times.map(stats);

    println!(
        "dfs store bench: {size_mib} MiB, {rounds} rounds, in {}",
        dir.path().display()
    );
    println!(
        "{:<26} {:>12} {:>8} {:>12} {:>8}",
        "operation", "median MiB/s", "ratio", "best MiB/s", "ratio"
    );
    let row = |name: &str, (median, best): (f64, f64), (base_median, base_best): (f64, f64)| {
        println!(
            "{name:<26} {:>12.0} {:>8.2} {:>12.0} {:>8.2}",
            mib / median,
            base_median / median,
            mib / best,
            base_best / best
        );
    };
    row("fs::copy + fsync", copy_s, copy_s);
    row("store put", put_s, copy_s);
    row("store put (all deduped)", dedup_s, copy_s);
    row("plain read", read_s, read_s);
    row("store get (verified)", get_s, read_s);
    println!("peak RSS (VmHWM): {:.1} MiB", peak_rss_mib());
    if only == "large" {
        return Ok(());
    }
    print_small(dir.path(), small_n)
}

fn print_small(dir: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let rate = small_puts(dir, n)?;
    println!(
        "{n} durable puts of {} KiB from {SMALL_THREADS} threads in {}: {rate:.0} puts/s",
        SMALL_SIZE / 1024,
        dir.display()
    );
    Ok(())
}
