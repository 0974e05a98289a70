//! Huffman throughput on 10 million symbols of a skewed 32-symbol
//! distribution (geometric, p(i) ∝ 0.7^i), one core.
//!
//! Run with `cargo bench -p deepcomp-entropy`.
//!
//! Time is the benchmark thread's own CPU time (`sum_exec_runtime` from
//! `/proc/thread-self/schedstat`, nanosecond resolution), so time the thread
//! spends descheduled while other processes share the cores does not count.
//! Where that file is unreadable the wall clock is used instead.

use std::time::Instant;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use deepcomp_entropy::{BitReader, BitWriter, HuffmanCode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 10_000_000;
const ALPHABET: usize = 32;

fn skewed_symbols() -> Vec<u32> {
    let weights: Vec<f64> = (0..ALPHABET).map(|i| 0.7f64.powi(i as i32)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(ALPHABET);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    (0..N)
        .map(|_| {
            let u: f64 = rng.random();
            cdf.iter().position(|&c| u < c).unwrap_or(ALPHABET - 1) as u32
        })
        .collect()
}

/// Thread CPU time in nanoseconds, if the kernel exposes it.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Criterion measurement: thread CPU time (falls back to wall time).
struct ThreadCpuTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = (Option<u64>, Instant);
    type Value = f64;

    fn start(&self) -> Self::Intermediate {
        (thread_cpu_ns(), Instant::now())
    }
    fn end(&self, (cpu0, wall0): Self::Intermediate) -> f64 {
        match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64,
            _ => wall0.elapsed().as_nanos() as f64,
        }
    }
    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }
    fn zero(&self) -> f64 {
        0.0
    }
    fn to_f64(&self, v: &f64) -> f64 {
        *v
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else if typical < 1e9 {
            (1e-6, "ms")
        } else {
            (1e-9, "s")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (n, unit) = match *throughput {
            Throughput::Bytes(b) | Throughput::BytesDecimal(b) => (b as f64, "MB/s"),
            Throughput::Elements(e) => (e as f64, "Melem/s"),
        };
        values.iter_mut().for_each(|v| *v = n * 1e3 / *v);
        unit
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let symbols = skewed_symbols();
    let code = HuffmanCode::from_symbols(&symbols, ALPHABET, None).unwrap();
    let bits = code.encode(&symbols).unwrap();
    let (bytes, bit_len) = {
        let mut w = BitWriter::new();
        code.encode_into(&symbols, &mut w).unwrap();
        w.finish()
    };
    eprintln!(
        "{} symbols, {:.4} bits/symbol, max code length {}",
        N,
        bits.len() as f64 / N as f64,
        code.max_len()
    );

    let mut g = c.benchmark_group("huffman_10M_skewed32");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.bench_function("encode_bitvec", |b| {
        b.iter(|| code.encode(black_box(&symbols)).unwrap())
    });
    g.bench_function("decode_bitvec", |b| {
        b.iter(|| code.decode(black_box(&bits), N).unwrap())
    });
    // Floor for any API returning a fresh Vec<u32> of N symbols: allocating
    // and first-touching 40 MB (kernel page faults + zeroing), no decoding.
    g.bench_function("baseline_fresh_vec_u32_fill", |b| {
        b.iter(|| {
            let mut v: Vec<u32> = Vec::with_capacity(black_box(N));
            v.extend(std::iter::repeat_n(1u32, N));
            v
        })
    });
    // Steady state: the output buffer is reused, so the 40 MB of fresh
    // pages a new Vec<u32> costs (kernel page faults and zeroing) is not
    // part of the figure.
    let mut out = Vec::with_capacity(N);
    g.bench_function("decode_from_reader_reused_buffer", |b| {
        b.iter(|| {
            let mut r = BitReader::with_bit_len(black_box(&bytes), bit_len).unwrap();
            out.clear();
            code.decode_from(&mut r, N, &mut out).unwrap();
            out.len()
        })
    });
    let mut w = BitWriter::with_capacity_bits(bit_len as usize + 64);
    g.bench_function("encode_into_reused_writer", |b| {
        b.iter(|| {
            w.clear();
            code.encode_into(black_box(&symbols), &mut w).unwrap();
            w.bit_len()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench
}
criterion_main!(benches);
