//! Constant time, shown statistically (the dudect method): two classes of inputs — a presented
//! secret equal to the real one, and one that differs in its first byte — measured in many
//! interleaved samples in random order, compared with Welch's t-test. |t| below 4.5 means no
//! timing difference was detected; the same harness run on a naive `==` over the same data must
//! detect one, or the harness proves nothing.
//!
//! ```text
//! cargo bench --bench constant_time
//! ```
//!
//! Exits non-zero if the crate's checks leak (|t| ≥ 4.5) or the naive comparison does not.

use std::hint::black_box;
use std::time::Instant;

use lanlink::{InstanceId, LocalSecret};
use rand::{Rng, RngCore, SeedableRng};

/// Samples per measurement, and operations timed per sample (the clock is too coarse for one).
const SAMPLES: usize = 400_000;
const BATCH: usize = 32;
const THRESHOLD: f64 = 4.5;

/// Welford's running mean and variance.
#[derive(Default, Clone, Copy)]
struct Stats {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Stats {
    fn push(&mut self, x: f64) {
        self.n += 1.0;
        let d = x - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (x - self.mean);
    }
    fn var(&self) -> f64 {
        if self.n > 1.0 {
            self.m2 / (self.n - 1.0)
        } else {
            0.0
        }
    }
}

fn welch(a: &Stats, b: &Stats) -> f64 {
    let se = (a.var() / a.n + b.var() / b.n).sqrt();
    if se == 0.0 {
        0.0
    } else {
        (a.mean - b.mean) / se
    }
}

/// Measures `op(input)` in random class order, where `input` is `equal` or `differ` copied into
/// the same buffer before the clock starts (so both classes read the same memory); returns the
/// largest |t| over the dudect crops (all samples, and samples under the 50th, 75th, 90th and
/// 95th percentiles, which drop interrupts and other noise).
fn measure(
    name: &str,
    equal: [u8; 32],
    differ: [u8; 32],
    mut op: impl FnMut(&[u8; 32]) -> bool,
) -> f64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut samples: Vec<(bool, f64)> = Vec::with_capacity(SAMPLES);
    let mut input = [0u8; 32];
    for _ in 0..SAMPLES {
        let class = rng.random::<bool>();
        input.copy_from_slice(if class { &equal } else { &differ });
        let input = black_box(&input);
        let start = Instant::now();
        for _ in 0..BATCH {
            black_box(op(black_box(input)));
        }
        samples.push((class, start.elapsed().as_nanos() as f64));
    }
    let mut sorted: Vec<f64> = samples.iter().map(|s| s.1).collect();
    sorted.sort_by(f64::total_cmp);
    let mut worst: f64 = 0.0;
    let mut line = String::new();
    for pct in [100usize, 95, 90, 75, 50] {
        let cut = sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)];
        let (mut equal, mut differ) = (Stats::default(), Stats::default());
        for &(class, t) in &samples {
            if t <= cut {
                if class {
                    equal.push(t);
                } else {
                    differ.push(t);
                }
            }
        }
        let t = welch(&equal, &differ);
        worst = worst.max(t.abs());
        line.push_str(&format!(" p{pct}: t={t:+.2}"));
    }
    println!("{name:<44} max |t| = {worst:6.2}  ({SAMPLES} samples x {BATCH} ops;{line})");
    worst
}

fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    let real = LocalSecret::from_bytes(bytes);
    let mut other = bytes;
    other[0] ^= 0x01;
    let id = InstanceId::from_bytes([3; 16]);
    let commitment = real.commitment(&id);

    // Each op builds the presented secret from the buffer, as a decoder would, then compares.
    let agent = measure("agent: LocalSecret::ct_eq", bytes, other, |input| {
        real.ct_eq(&LocalSecret::from_bytes(*input))
    });
    let server = measure("server: Commitment::verify", bytes, other, |input| {
        commitment.verify(&id, &LocalSecret::from_bytes(*input))
    });
    let naive = measure(
        "naive: byte-by-byte == (the control)",
        bytes,
        other,
        |input| naive_eq(&bytes, input),
    );

    // Rust's own `==` on byte slices (memcmp), reported for reference: it compares in wide
    // chunks, so a first-byte difference may or may not show at this sample size.
    let slice_eq = measure("reference: Rust [u8] == (memcmp)", bytes, other, |input| {
        black_box(&bytes[..]) == &input[..]
    });
    let _ = slice_eq;

    let ok = agent < THRESHOLD && server < THRESHOLD && naive >= THRESHOLD;
    println!(
        "verdict: crate checks {} (|t| < {THRESHOLD}); naive comparison {} (the harness can fail)",
        if agent < THRESHOLD && server < THRESHOLD {
            "show no leak"
        } else {
            "LEAK"
        },
        if naive >= THRESHOLD {
            "leaks, as expected"
        } else {
            "NOT DETECTED"
        }
    );
    if !ok {
        std::process::exit(1);
    }
}

/// The comparison a careless implementation writes: byte by byte, stopping at the first
/// difference.
#[inline(never)]
fn naive_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    for i in 0..a.len() {
        if a[i] != b[i] {
            return false;
        }
    }
    true
}
