//! `deepcomp`: the command-line interface of the driver.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use deepcomp_driver::verbosity::{self, Verbosity};
use deepcomp_driver::{
    bench, compress, container, epoch, overrides, pipeline, recipe, summary, sweep,
};

/// Deep Compression (pruning, trained quantization, Huffman coding) for neural networks.
#[derive(Debug, Parser)]
#[command(name = "deepcomp", version, about, long_about = None)]
struct Cli {
    /// Print only errors and the final one-line result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Also print one line per epoch, the mask summary and the sensitivity table (on standard error).
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Threads for deepcomp's kernels (rayon's pool) [default: $RAYON_NUM_THREADS, else every core;
    /// `bench`: 2].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a recipe end to end: train, prune, finetune, quantize, encode, decode, verify, report.
    Pipeline {
        /// Built-in recipe name (see `deepcomp recipes`) or a TOML file.
        #[arg(long, default_value = "lenet300-fashion")]
        recipe: String,
        /// Output folder [default: target/deepcomp/<recipe name>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Ignore checkpoints of an earlier run in the output folder and start over.
        #[arg(long)]
        fresh: bool,
        /// Dataset folder (first place looked at).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Hide progress bars.
        #[arg(long)]
        no_progress: bool,
        /// Device for training and evaluation: cpu, cuda or cuda:N (cuda needs a `cargo xtask gpu-build` binary).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print the whole report.md on standard output (by default: a short summary).
        #[arg(long)]
        print_report: bool,
        /// Override a recipe field: KEY=VALUE, KEY a dotted path (`train.epochs`,
        /// `prune.rounds.0.target`, `quant.bits.fc1.weight`), VALUE a TOML value or a bare word
        /// (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Run a recipe at every point of a grid of overrides, each into DIR/points/<point>/; reuses the
    /// stages points share; writes DIR/sweep.json, sweep.md and plots/tradeoff.svg.
    Sweep {
        /// Built-in recipe name (see `deepcomp recipes`) or a TOML file.
        #[arg(long, default_value = "lenet300-fashion")]
        recipe: String,
        /// An axis: KEY=V1,V2,… (values split on top-level commas; `[0.5,0.9]` is one value).
        /// Repeatable: the points are the product of the axes.
        #[arg(long = "set", value_name = "KEY=V1,V2,...")]
        sets: Vec<String>,
        /// Pair the value lists element by element (equal lengths) instead of their product.
        #[arg(long)]
        zip: bool,
        /// Sweep folder [default: target/deepcomp/sweep-<recipe name>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Dataset folder (first place looked at).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Hide progress bars.
        #[arg(long)]
        no_progress: bool,
        /// Device for training and evaluation: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Time training epochs of one architecture on one device (SGD + momentum, seeded data); the
    /// second epoch is the warm one. Compare with `xtask/gpu/torch_epoch.py`.
    TrainEpoch {
        /// Architecture: vgg16_half, resnet20, cifar_lenet, lenet5, lenet300, mlp.
        #[arg(long, default_value = "resnet20")]
        arch: String,
        /// Device: cpu, cuda or cuda:N (cuda needs a `cargo xtask gpu-build` binary).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Training examples per epoch.
        #[arg(long, default_value_t = 50_000)]
        examples: usize,
        /// Batch size.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Epochs to run (the second is reported as warm).
        #[arg(long, default_value_t = 2)]
        epochs: usize,
        /// Learning rate.
        #[arg(long, default_value_t = 0.01)]
        lr: f64,
        /// SGD momentum.
        #[arg(long, default_value_t = 0.9)]
        momentum: f64,
        /// L2 weight decay.
        #[arg(long, default_value_t = 5e-4)]
        weight_decay: f64,
        /// Seed of weights, generated data and shuffling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Train on CIFAR-10 from this folder or archive instead of generated data.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write the JSON figures [default: target/deepcomp/train-epoch-<arch>-<device>.json].
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Compress any safetensors file without data: prune by magnitude, share weights, Huffman-code.
    Compress {
        /// Input safetensors file.
        input: PathBuf,
        /// Output `.dcz` file.
        #[arg(short, long)]
        output: PathBuf,
        /// Prune the q-th percentile of |w| in each weight tensor (0 keeps all nonzeros).
        #[arg(long, default_value_t = 90.0)]
        q: f64,
        /// Prune |w| < s·std instead (Han's rule); overrides --q.
        #[arg(long)]
        std: Option<f64>,
        /// Bits of fc (rank-2) weights.
        #[arg(long, default_value_t = 5)]
        fc_bits: u8,
        /// Bits of conv (rank-4) weights.
        #[arg(long, default_value_t = 8)]
        conv_bits: u8,
        /// Centroid initialization: linear, density, random, kmeans++.
        #[arg(long, default_value = "linear")]
        init: String,
        /// Relative-index field width (default: the smallest file per layer).
        #[arg(long)]
        index_bits: Option<u8>,
        /// Print one JSON document (totals and per-layer rows) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Decode a `.dcz` file into a safetensors file (loadable by PyTorch).
    Decompress {
        /// Input `.dcz` file.
        input: PathBuf,
        /// Output safetensors file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print the per-layer table of a `.dcz` file.
    Inspect {
        /// The `.dcz` file.
        input: PathBuf,
        /// Print one JSON document (totals and per-layer rows) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a model file (`.dcz` or safetensors) on a recipe's test set.
    Eval {
        /// The model file.
        model: PathBuf,
        /// Recipe giving the architecture and dataset.
        #[arg(long, default_value = "lenet300-fashion")]
        recipe: String,
        /// Dataset folder or archive.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Per-channel normalization mean on [0, 1] pixels, comma-separated (e.g. 0.485,0.456,0.406);
        /// overrides the recipe's `data.mean`.
        #[arg(long, value_delimiter = ',', requires = "std")]
        mean: Option<Vec<f32>>,
        /// Per-channel normalization standard deviation, comma-separated; goes with --mean.
        #[arg(long, value_delimiter = ',', requires = "mean")]
        std: Option<Vec<f32>>,
        /// How a `.dcz` is run: `dense` (decoded into the training model) or `compressed` (kept
        /// compressed, deepcomp-runtime's kernels).
        #[arg(long, value_enum, default_value = "dense")]
        engine: Engine,
        /// Rename a safetensors file's keys before loading: REGEX=REPLACEMENT (repeatable, applied in
        /// order), e.g. --key-map '^module\.='.
        #[arg(long = "key-map")]
        key_map: Vec<String>,
        /// Print one JSON document (accuracy, examples, split, file) instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Run a `.dcz` with the compressed engine (no decoding) over a recipe's test set: top-1, top-5,
    /// forward time, weight bytes.
    Run {
        /// The `.dcz` file.
        model: PathBuf,
        /// Recipe giving the dataset, normalization and batching.
        #[arg(long, default_value = "lenet300-fashion")]
        recipe: String,
        /// Dataset folder or archive.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Measure throughput (training, Huffman, k-means) and write JSON.
    Bench {
        /// Where to write the JSON figures.
        #[arg(long, default_value = "target/deepcomp/bench.json")]
        json: PathBuf,
        /// Fewer repetitions (for a quick look). Threads: the global --threads (default 2 here: the
        /// figures compared with PyTorch use 2).
        #[arg(long)]
        quick: bool,
    },
    /// List the built-in recipes.
    Recipes,
}

/// How `eval` runs a `.dcz`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Engine {
    /// Decoded to dense tensors in the training model.
    Dense,
    /// Kept compressed (deepcomp-runtime).
    Compressed,
}

/// Reads a `.dcz` file; the error names the file.
fn read_dcz(path: &std::path::Path) -> Result<container::DczFile> {
    container::DczFile::read(path).with_context(|| format!("{}: cannot decode", path.display()))
}

fn parse_init(s: &str) -> Result<deepcomp_quant::Init> {
    Ok(match s {
        "linear" => deepcomp_quant::Init::Linear,
        "density" => deepcomp_quant::Init::Density,
        "random" => deepcomp_quant::Init::Random { seed: 0 },
        "kmeans++" => deepcomp_quant::Init::KMeansPlusPlus { seed: 0 },
        other => bail!("--init `{other}` is not one of linear, density, random, kmeans++"),
    })
}

/// The heavy CPU work (gemm-based linear and conv layers, pooling, BatchNorm) runs in deepcomp's own
/// kernels on rayon's pool (`RAYON_NUM_THREADS`, default: every core). What candle still runs itself
/// (the loss, gradient sums) is small, and candle 0.11 runs it on a second, busy-waiting thread pool
/// that competes with rayon's for the same cores. Unless the user chose, candle gets one thread:
/// measured on 2 cores, LeNet-300-100 trains at 90k ex/s this way vs 75k with candle's default, and
/// LeNet-5 at 7.0k vs 6.4k (`cargo run --release -p deepcomp-models --example train_speed`). Called
/// before any tensor exists.
///
/// `--threads N` sets rayon's global pool to N threads (as `RAYON_NUM_THREADS=N` would, and it wins
/// over that variable); candle keeps its one thread unless `CANDLE_NUM_THREADS` says otherwise.
fn set_thread_default(threads: Option<u16>) -> Result<()> {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Edition 2021: `set_var` is safe; it runs before any other thread is started.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if let Some(n) = threads {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(n))
            .build_global()
            .with_context(|| format!("--threads {n}: cannot start the thread pool"))?;
    }
    Ok(())
}

/// Every op of candle and of our kernels returns a fresh buffer; glibc's allocator hands the large ones
/// back to the kernel on free, so each training step page-faults its way through fresh zeroed pages.
/// mimalloc keeps them: LeNet-300-100 trains at 90k ex/s with it vs 47k–52k with glibc, LeNet-5 at 7.0k
/// vs 4.3k–4.5k (same example, 2 cores).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes to stdout; a closed pipe (`deepcomp inspect m.dcz | head -1`) ends the program quietly with
/// status 0, as `cat` would, instead of panicking.
fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("deepcomp: error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*)) };
}

macro_rules! outln {
    ($($t:tt)*) => { emit(&(format!($($t)*) + "\n")) };
}

/// Errors are printed once, with their causes, and no backtrace (status 1); clap's usage errors keep
/// their own status 2.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deepcomp: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    set_thread_default(cli.threads)?;
    let quiet = cli.quiet;
    verbosity::set(if quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    });
    match cli.cmd {
        Cmd::Pipeline {
            recipe,
            out,
            fresh,
            data,
            no_progress,
            device,
            print_report,
            sets,
        } => {
            let recipe = overrides::load_with(&recipe, &sets)?;
            let device = epoch::parse_device(&device)?;
            let out =
                out.unwrap_or_else(|| PathBuf::from("target/deepcomp").join(&recipe.recipe.name));
            let opts = pipeline::PipelineOptions {
                recipe,
                out: out.clone(),
                fresh,
                progress: !no_progress && !quiet,
                data_path: data,
            };
            let report = pipeline::run_on(&opts, &device)?;
            if print_report {
                outln!("{}", report.to_markdown());
            }
            let a = &report.accuracy;
            let report_md = out.join("report.md");
            if quiet {
                outln!(
                    "{}: top-1 {:.4} → {:.4} ({:+.2} points), {} → {} bytes ({:.1}×), report {}",
                    report.recipe,
                    a.dense,
                    a.decoded,
                    -report.drop.points,
                    report.bytes.dense_f32,
                    report.bytes.dcz,
                    report.ratio.file,
                    report_md.display()
                );
            } else {
                outln!(
                    "recipe `{}`: top-1 (test split, {} examples) dense {:.4}, decoded {:.4}",
                    report.recipe,
                    report.examples.test,
                    a.dense,
                    a.decoded
                );
                outln!("{}", report.drop_sentence());
                outln!(
                    "{}: {} bytes, {:.1}× smaller than the dense fp32 model ({} bytes)",
                    out.join("model.dcz").display(),
                    report.bytes.dcz,
                    report.ratio.file,
                    report.bytes.dense_f32
                );
                outln!("report: {}", report_md.display());
            }
        }
        Cmd::Sweep {
            recipe,
            sets,
            zip,
            out,
            data,
            no_progress,
            device,
        } => {
            let device = epoch::parse_device(&device)?;
            let opts = sweep::SweepOptions {
                recipe,
                sets,
                zip,
                out,
                data_path: data,
                progress: !no_progress && !quiet,
            };
            let done = sweep::run(&opts, &device)?;
            out!("{}", sweep::to_markdown(&done.recipe, &done.rows));
            outln!(
                "sweep of {} point(s) in {}",
                done.rows.len(),
                done.out.display()
            );
        }
        Cmd::TrainEpoch {
            arch,
            device,
            examples,
            batch,
            epochs,
            lr,
            momentum,
            weight_decay,
            seed,
            data,
            json,
        } => {
            let dev = epoch::parse_device(&device)?;
            let opts = epoch::EpochOptions {
                arch,
                examples,
                batch,
                epochs,
                lr,
                momentum,
                weight_decay,
                seed,
                data,
            };
            let report = epoch::train_epochs(&opts, &dev)?;
            let json = json.unwrap_or_else(|| {
                PathBuf::from("target/deepcomp").join(format!(
                    "train-epoch-{}-{}.json",
                    report.arch,
                    report.device.replace(':', "")
                ))
            });
            deepcomp_driver::fsutil::write_json(&json, &report)?;
            outln!("{}", serde_json::to_string_pretty(&report)?);
            if !quiet {
                eprintln!(
                    "train-epoch: {} on {}: warm epoch {:.3} s ({:.0} ex/s); wrote {}",
                    report.arch,
                    report.device,
                    report.warm_seconds,
                    report.warm_ex_per_s,
                    json.display()
                );
            }
        }
        Cmd::Compress {
            input,
            output,
            q,
            std,
            fc_bits,
            conv_bits,
            init,
            index_bits,
            json,
        } => {
            deepcomp_driver::fsutil::ensure_distinct(&input, &output)?;
            let tensors = compress::read_safetensors(&input)?;
            let opts = compress::CompressOptions {
                q,
                std_s: std,
                fc_bits,
                conv_bits,
                init: parse_init(&init)?,
                index_bits,
                model_name: input
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let dense_bytes: u64 = tensors.iter().map(|t| 4 * t.data.len() as u64).sum();
            let file = compress::compress_tensors(&tensors, &opts)?;
            let bytes = file.write_atomic(&output)?;
            let back = read_dcz(&output)?;
            if back != file {
                bail!(
                    "{}: read back differs from what was written",
                    output.display()
                );
            }
            if json {
                let mut sum =
                    summary::file_summary("compress", &output, Some(&input), &back, bytes)?;
                // The input's every tensor as fp32 (what `compress` read), not only what it kept.
                sum.bytes_in = dense_bytes;
                sum.ratio = dense_bytes as f64 / bytes.max(1) as f64;
                outln!("{}", serde_json::to_string_pretty(&sum)?);
            } else {
                outln!(
                    "{} → {}: {dense_bytes} → {bytes} bytes ({:.1}×)",
                    input.display(),
                    output.display(),
                    dense_bytes as f64 / bytes.max(1) as f64
                );
                if !quiet {
                    out!("{}", container::stats_table(&back)?);
                }
            }
        }
        Cmd::Decompress { input, output } => {
            deepcomp_driver::fsutil::ensure_distinct(&input, &output)?;
            let file = read_dcz(&input)?;
            compress::write_safetensors(&output, &compress::decoded_tensors(&file))?;
            outln!("{} → {}", input.display(), output.display());
        }
        Cmd::Inspect { input, json } => {
            let file = read_dcz(&input)?;
            let size = std::fs::metadata(&input)
                .with_context(|| input.display().to_string())?
                .len();
            if json {
                let sum = summary::file_summary("inspect", &input, None, &file, size)?;
                outln!("{}", serde_json::to_string_pretty(&sum)?);
            } else {
                outln!(
                    "{}: model `{}`, {size} bytes, recipe hash {}",
                    input.display(),
                    file.model,
                    hex::encode(file.recipe_hash)
                );
                out!("{}", container::stats_table(&file)?);
                for d in &file.dense {
                    outln!("raw  {:<28} {:?}", d.name, d.shape);
                }
            }
        }
        Cmd::Eval {
            model,
            recipe,
            data,
            mean,
            std,
            key_map,
            engine,
            json,
        } => {
            let recipe_name = recipe.clone();
            let loaded = recipe::load(&recipe)?;
            let mut r = loaded.recipe;
            if mean.is_some() {
                r.data.mean = mean;
                r.data.std = std;
                r.validate("--mean/--std")?;
            }
            let map = key_map
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(a, b)| [a.to_string(), b.to_string()])
                        .with_context(|| format!("--key-map `{kv}`: expected REGEX=REPLACEMENT"))
                })
                .collect::<Result<Vec<_>>>()?;
            let map = (!map.is_empty()).then_some(map.as_slice());
            let (top1, top5, examples) = match engine {
                Engine::Compressed => {
                    let rep = deepcomp_driver::engine::run_file(&r, &model, data.as_deref())?;
                    (rep.top1, rep.top5, rep.examples)
                }
                Engine::Dense => pipeline::eval_file_counted(&r, &model, data.as_deref(), map)?,
            };
            if json {
                let sum = summary::EvalSummary {
                    command: "eval".into(),
                    file: model.display().to_string(),
                    recipe: recipe_name,
                    engine: match engine {
                        Engine::Dense => "dense".into(),
                        Engine::Compressed => "compressed".into(),
                    },
                    split: "test".into(),
                    examples,
                    accuracy: top1,
                    top5: top5.is_finite().then_some(top5),
                };
                outln!("{}", serde_json::to_string_pretty(&sum)?);
            } else {
                outln!(
                    "{}: top-1 {top1:.4}  top-5 {top5:.4}  ({examples} test examples)",
                    model.display()
                );
            }
        }
        Cmd::Run {
            model,
            recipe,
            data,
            json,
        } => {
            let r = recipe::load(&recipe)?.recipe;
            let rep = deepcomp_driver::engine::run_file(&r, &model, data.as_deref())?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                outln!(
                    "{}: top-1 {:.4}  top-5 {:.4}  {} examples in {:.3} s ({:.0} ex/s, batch {})  \
                     weights {} B compressed vs {} B dense f32 ({:.1}x)",
                    model.display(),
                    rep.top1,
                    rep.top5,
                    rep.examples,
                    rep.forward_seconds,
                    rep.ex_per_s,
                    rep.batch_size,
                    rep.weight_bytes,
                    rep.dense_bytes,
                    rep.dense_bytes as f64 / rep.weight_bytes.max(1) as f64
                );
            }
        }
        Cmd::Bench { json, quick } => {
            let threads = cli.threads.map_or(2, usize::from);
            let figures = bench::run(quick, threads)?;
            deepcomp_driver::fsutil::write_json(&json, &figures)?;
            outln!("{}", serde_json::to_string_pretty(&figures)?);
        }
        Cmd::Recipes => {
            for (name, text) in recipe::BUILTIN {
                let r = recipe::parse(text, name)?;
                outln!("{name:<22} {}", r.recipe.description);
            }
        }
    }
    Ok(())
}
