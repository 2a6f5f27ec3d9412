//! Placement over simulated members (no network): how evenly 1,000 members share the stored
//! bytes of 1,000,000 files at R = 3, and how much moves when one member joins or leaves.
//! `cargo bench --bench placement` (`-- --quick`: 100 members, 100,000 files).

use dfs::placement::{place, Candidate, DEFAULT_CAPACITY};
use dfs::record::Hash;
use libp2p::PeerId;

const R: usize = 3;

/// The `R` best candidates of one file, by index (the draw [`place`] uses, without allocating).
fn top(cid: &Hash, members: &[Candidate]) -> [usize; R] {
    let mut best: [(f64, u64, usize); R] = [(f64::MIN, 0, usize::MAX); R];
    for (i, c) in members.iter().enumerate() {
        let (score, h) = c.draw(cid);
        if (score, h) > (best[R - 1].0, best[R - 1].1) {
            best[R - 1] = (score, h, i);
            best.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        }
    }
    [best[0].2, best[1].2, best[2].2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, files) = if quick {
        (100, 100_000u64)
    } else {
        (1000, 1_000_000u64)
    };
    let members: Vec<Candidate> = (0..n)
        .map(|_| Candidate::new(PeerId::random(), DEFAULT_CAPACITY))
        .collect();
    // File sizes from 0.5 to 1.5 MiB (a deterministic spread).
    let size = |i: u64| (512 << 10) + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44);
    let cid = |i: u64| Hash::of(&i.to_le_bytes());
    let started = std::time::Instant::now();
    let mut bytes = vec![0u64; n];
    let mut before = Vec::with_capacity(files as usize);
    for i in 0..files {
        let t = top(&cid(i), &members);
        for m in t {
            bytes[m] += size(i);
        }
        before.push(t);
    }
    // The allocating function agrees with the loop above.
    for i in (0..files).step_by(997) {
        let p = place(&cid(i), &members, R);
        let t = before[i as usize];
        assert_eq!(p, t.iter().map(|m| members[*m].peer).collect::<Vec<_>>());
    }
    let mean = bytes.iter().sum::<u64>() as f64 / n as f64;
    let (lo, hi) = bytes
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), b| (lo.min(*b), hi.max(*b)));
    let below = (mean - lo as f64) / mean * 100.0;
    let above = (hi as f64 - mean) / mean * 100.0;
    println!(
        "placement: {n} members, {files} files, R = {R}: stored bytes per member from -{below:.1}% to +{above:.1}% of the mean ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    // One member joins: the copies it takes move, and nothing else.
    let mut joined = members.clone();
    joined.push(Candidate::new(PeerId::random(), DEFAULT_CAPACITY));
    let mut moved = 0u64;
    let mut total = 0u64;
    for i in 0..files {
        let after = top(&cid(i), &joined);
        moved += after
            .iter()
            .filter(|m| !before[i as usize].contains(m))
            .map(|_| size(i))
            .sum::<u64>();
        total += R as u64 * size(i);
    }
    println!(
        "placement: a member joins {n}: {:.3}% of the stored bytes move (1/N = {:.3}%)",
        moved as f64 / total as f64 * 100.0,
        100.0 / (n + 1) as f64
    );
    // One member leaves: its copies move, and nothing else.
    let gone = 0usize;
    let rest: Vec<Candidate> = members[1..].to_vec();
    let mut moved = 0u64;
    for i in 0..files {
        let after = top(&cid(i), &rest);
        let was = before[i as usize];
        let kept = after.iter().filter(|m| was.contains(&(**m + 1))).count();
        assert_eq!(
            kept,
            R - usize::from(was.contains(&gone)),
            "only the leaver's copies move"
        );
        moved += (R - kept) as u64 * size(i);
    }
    println!(
        "placement: a member leaves {n}: {:.3}% of the stored bytes move (1/N = {:.3}%)",
        moved as f64 / total as f64 * 100.0,
        100.0 / n as f64
    );
    assert!(
        below <= 10.0 && above <= 10.0,
        "stored bytes within ±10% of the mean"
    );
}
