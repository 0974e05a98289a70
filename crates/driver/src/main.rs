//! `deepcomp`: the command-line interface of the driver.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use deepcomp_driver::verbosity::{self, Verbosity};
use deepcomp_driver::{
    bench, compress, container, epoch, experiment, overrides, pipeline, recipe, summary, sweep,
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
    /// Run an experiment file (experiments/*.toml): its sweeps, one table each, with the notebook's
    /// figures beside ours; writes OUT/experiment.md, OUT/experiment.json and one sweep folder per
    /// table.
    Experiment {
        /// The experiment file.
        file: PathBuf,
        /// The short variant (the file's [short] overrides: less data, fewer epochs and points).
        #[arg(long)]
        short: bool,
        /// Output folder [default: target/deepcomp/experiments/<file stem>[-short]].
        #[arg(long)]
        out: Option<PathBuf>,
        /// The shared data folder that `${data}` in the file stands for.
        #[arg(long, default_value = deepcomp_driver::experiment::DEFAULT_DATA_ROOT)]
        data_root: PathBuf,
        /// Only check the file (every point of every sweep, every column) and list the sweeps;
        /// run and write nothing.
        #[arg(long)]
        check: bool,
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
    /// Compress any safetensors file: prune by magnitude, share weights, Huffman-code; optionally
    /// evaluate before and after on a test set.
    Compress(Box<CompressArgs>),
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
    /// Evaluate a model file (`.dcz` or safetensors) on a test set: a `.dcz` with metadata needs only
    /// --data; otherwise a recipe gives architecture and dataset.
    Eval {
        /// The model file.
        model: PathBuf,
        /// Recipe giving the architecture and dataset [default: the `.dcz` file's metadata, else
        /// lenet300-fashion].
        #[arg(long)]
        recipe: Option<String>,
        /// Dataset id (mnist, fashion-mnist, cifar10, cifar100), overriding the file's or recipe's.
        #[arg(long)]
        dataset: Option<String>,
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
        /// Recipe giving the dataset, normalization and batching [default: the file's metadata,
        /// else lenet300-fashion].
        #[arg(long)]
        recipe: Option<String>,
        /// Dataset id, overriding the file's or recipe's.
        #[arg(long)]
        dataset: Option<String>,
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
    /// Seed 003's Lab 1, sparse least squares: plain, projected, L1, proximal L1 and trimmed L1
    /// gradient descent; prints the table, writes trajectories (CSV) and figures (SVG).
    Lsq {
        /// Output folder.
        #[arg(long, default_value = "target/deepcomp/lsq")]
        out: PathBuf,
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

/// `deepcomp compress`: settings come from the command line, then `--config`, then the defaults.
#[derive(Debug, clap::Args)]
struct CompressArgs {
    /// Input safetensors file.
    input: PathBuf,
    /// Output `.dcz` file.
    #[arg(short, long)]
    output: PathBuf,
    /// TOML file with the settings below (q, std, global, fc_bits, conv_bits, init, index_bits,
    /// keep_first_last, exclude, key_map, raw_dtype, [[layer]] rules); command-line options override
    /// it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Prune the q-th percentile of |w| in each weight tensor (0 keeps all nonzeros) [default: 50].
    #[arg(long)]
    q: Option<f64>,
    /// Prune |w| < s·std instead (Han's rule); overrides --q.
    #[arg(long)]
    std: Option<f64>,
    /// Global magnitude pruning: one threshold, the q-th percentile of |w| over all compressed
    /// tensors together.
    #[arg(long)]
    global: bool,
    /// Bits of fc (rank-2) weights [default: 8].
    #[arg(long)]
    fc_bits: Option<u8>,
    /// Bits of conv (rank-4) weights [default: 8].
    #[arg(long)]
    conv_bits: Option<u8>,
    /// Centroid initialization: linear, density, random, kmeans++ [default: linear].
    #[arg(long)]
    init: Option<String>,
    /// Relative-index field width (default: the smallest file per layer).
    #[arg(long)]
    index_bits: Option<u8>,
    /// Store tensors whose name matches this regular expression raw (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Per-tensor settings: PATTERN:key=value,… with q, std, bits and the flags dense / compress
    /// (repeatable, applied in order), e.g. --layer '^layer3\.:q=60,bits=6'.
    #[arg(long)]
    layer: Vec<String>,
    /// Compress the input and output layers too (by default they stay dense).
    #[arg(long)]
    no_keep_first_last: bool,
    /// Store every raw float tensor (biases, BatchNorm, layers kept dense) as f32, f16 or bf16
    /// (default: each tensor's own type); --data evaluates the rounded model.
    #[arg(long)]
    raw_dtype: Option<String>,
    /// Rename the input's keys first: REGEX=REPLACEMENT (repeatable, applied in order), e.g.
    /// --key-map '^module\.='.
    #[arg(long = "key-map")]
    key_map: Vec<String>,
    /// Architecture id stored in the file's metadata (lenet300, lenet5, mlp, cifar_lenet,
    /// vgg16_half, resnet20); needed to evaluate.
    #[arg(long)]
    arch: Option<String>,
    /// Dataset id stored in the metadata and used to evaluate (mnist, fashion-mnist, cifar10,
    /// cifar100).
    #[arg(long)]
    dataset: Option<String>,
    /// Input normalization mean per channel, comma-separated (stored in the metadata).
    #[arg(long, value_delimiter = ',', requires = "norm_std")]
    norm_mean: Option<Vec<f32>>,
    /// Input normalization standard deviation per channel, comma-separated.
    #[arg(long, value_delimiter = ',', requires = "norm_mean")]
    norm_std: Option<Vec<f32>>,
    /// Recipe giving architecture, dataset, normalization and key map (instead of --arch,
    /// --dataset, --norm-mean/--norm-std).
    #[arg(long)]
    recipe: Option<String>,
    /// Evaluate before and after compressing on this dataset folder or archive.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Fail (exit status 1, no output file) if top-1 drops by more than this many points.
    #[arg(long)]
    max_drop: Option<f64>,
    /// Print one JSON document (totals and per-layer rows) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Parses REGEX=REPLACEMENT pairs of `--key-map`.
fn parse_key_map(key_map: &[String]) -> Result<Vec<[String; 2]>> {
    key_map
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(a, b)| [a.to_string(), b.to_string()])
                .with_context(|| format!("--key-map `{kv}`: expected REGEX=REPLACEMENT"))
        })
        .collect()
}

/// `deepcomp compress`.
fn run_compress(a: CompressArgs, quiet: bool) -> Result<()> {
    use deepcomp_driver::meta;
    deepcomp_driver::fsutil::ensure_distinct(&a.input, &a.output)?;
    let cfg = match &a.config {
        Some(p) => compress::CompressConfig::load(p)?,
        None => compress::CompressConfig::default(),
    };
    let recipe = a.recipe.as_deref().map(recipe::load).transpose()?;
    let mut key_map = parse_key_map(&a.key_map)?;
    if key_map.is_empty() {
        key_map = cfg
            .key_map
            .clone()
            .or_else(|| recipe.as_ref().and_then(|r| r.recipe.train.key_map.clone()))
            .unwrap_or_default();
    }
    let mut input = compress::read_input(&a.input)?;
    input.apply_key_map(&key_map)?;
    // What the file says about the model, and the recipe to evaluate it with.
    let eval_recipe = match &recipe {
        Some(r) => {
            let mut r = r.recipe.clone();
            if let Some(d) = &a.dataset {
                r.dataset = d.clone();
            }
            if a.norm_mean.is_some() {
                r.data.mean = a.norm_mean.clone();
                r.data.std = a.norm_std.clone();
            }
            Some(r)
        }
        None => match (&a.arch, &a.dataset) {
            (Some(arch), Some(dataset)) => {
                let m = deepcomp_driver::container::ModelMeta {
                    arch: Some(arch.clone()),
                    dataset: Some(dataset.clone()),
                    mean: a.norm_mean.clone(),
                    std: a.norm_std.clone(),
                    ..Default::default()
                };
                Some(meta::recipe_from_meta(&m, None, "--arch/--dataset")?)
            }
            _ => None,
        },
    };
    let metadata = match (&eval_recipe, &a.arch) {
        (Some(r), _) => Some(meta::for_recipe(r, "deepcomp compress")),
        (None, Some(arch)) => Some(deepcomp_driver::container::ModelMeta {
            arch: Some(arch.clone()),
            mean: a.norm_mean.clone(),
            std: a.norm_std.clone(),
            producer: Some("deepcomp compress".into()),
            ..Default::default()
        }),
        (None, None) => None,
    };
    if a.data.is_some() && eval_recipe.is_none() {
        bail!("--data needs the model to evaluate: pass --recipe, or --arch and --dataset");
    }
    if a.max_drop.is_some() && a.data.is_none() && eval_recipe.is_none() {
        bail!("--max-drop needs an evaluation: pass --data with --recipe, or --arch and --dataset");
    }
    let mut rules = cfg.layer.clone();
    for spec in &a.layer {
        rules.push(compress::parse_layer_rule(spec)?);
    }
    let mut exclude = cfg.exclude.clone();
    exclude.extend(a.exclude.iter().cloned());
    let init = a.init.clone().or(cfg.init.clone());
    let opts = compress::CompressOptions {
        q: a.q.or(cfg.q).unwrap_or(compress::DEFAULT_Q),
        std_s: a.std.or(cfg.std),
        global: a.global || cfg.global.unwrap_or(false),
        fc_bits: a.fc_bits.or(cfg.fc_bits).unwrap_or(compress::DEFAULT_BITS),
        conv_bits: a
            .conv_bits
            .or(cfg.conv_bits)
            .unwrap_or(compress::DEFAULT_BITS),
        init: parse_init(init.as_deref().unwrap_or("linear"))?,
        index_bits: a.index_bits.or(cfg.index_bits),
        model_name: match metadata.as_ref().and_then(|m| m.arch.clone()) {
            Some(arch) => arch,
            None => a
                .input
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        },
        keep_first_last: !a.no_keep_first_last && cfg.keep_first_last.unwrap_or(true),
        exclude,
        rules,
        metadata: metadata.map(|m| m.to_json()),
        raw_dtype: a
            .raw_dtype
            .as_deref()
            .or(cfg.raw_dtype.as_deref())
            .map(compress::parse_raw_dtype)
            .transpose()?,
    };
    let file = compress::compress_model(&input, &opts)?;
    let bytes = file.to_bytes()?;
    let back = container::DczFile::from_bytes(&bytes)
        .with_context(|| format!("{}: cannot decode what was encoded", a.output.display()))?;
    if back != file {
        bail!(
            "{}: read back differs from what was written",
            a.output.display()
        );
    }
    if let (Some(r), true) = (&eval_recipe, a.data.is_some() || a.max_drop.is_some()) {
        let ((b1, b5), (a1, a5)) = compress::evaluate_before_after(
            r,
            a.data.as_deref(),
            &a.input,
            &input.f32_tensors(),
            &file,
        )?;
        let drop = 100.0 * (b1 - a1);
        if a.json {
            deepcomp_driver::note!("before: top-1 {b1:.4}  top-5 {b5:.4}");
            deepcomp_driver::note!("after:  top-1 {a1:.4}  top-5 {a5:.4}  (drop {drop:.2} points)");
        } else {
            outln!("before: top-1 {b1:.4}  top-5 {b5:.4}");
            outln!("after:  top-1 {a1:.4}  top-5 {a5:.4}  (drop {drop:.2} points)");
        }
        if let Some(max) = a.max_drop {
            if drop > max {
                bail!(
                    "top-1 dropped {drop:.2} points, more than --max-drop {max}; {} not written",
                    a.output.display()
                );
            }
        }
    }
    deepcomp_driver::fsutil::write_atomic(&a.output, &bytes)?;
    let written = bytes.len() as u64;
    if a.json {
        let mut sum = summary::file_summary("compress", &a.output, Some(&a.input), &back, written)?;
        // Measured against the input file's bytes (whatever its dtypes), as the table says.
        sum.bytes_in = input.file_bytes;
        sum.ratio = input.file_bytes as f64 / written.max(1) as f64;
        outln!("{}", serde_json::to_string_pretty(&sum)?);
        return Ok(());
    }
    outln!(
        "{} → {}: {} → {written} bytes ({:.2}× ratio vs input file bytes)",
        a.input.display(),
        a.output.display(),
        input.file_bytes,
        input.file_bytes as f64 / written.max(1) as f64
    );
    if quiet {
        return Ok(());
    }
    out!("{}", container::stats_table(&back)?);
    let raw: Vec<String> = back
        .dense
        .iter()
        .map(|d| d.name.clone())
        .chain(
            back.typed
                .iter()
                .map(|t| format!("{} ({})", t.name, t.dtype)),
        )
        .collect();
    outln!("raw: {}", raw.join(", "));
    Ok(())
}

/// Errors are printed once, with their causes, and no backtrace (status 1); clap's usage errors keep
/// their own status 2.
/// mimalloc's `purge_delay` option (the same index in its v2 and v3 option tables).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped instead of handing it back to the kernel 10 ms later (mimalloc's
/// default): a training step frees and reallocates the same tens of megabytes of activations and
/// gradients, and every purged page comes back through a page fault that zeroes it (8–9 % of a
/// ResNet-20 step in a profile). The resident size stays at the step's peak. A
/// `MIMALLOC_PURGE_DELAY` set in the environment wins.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator; valid at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
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
                donors: Vec::new(),
            };
            let done = sweep::run(&opts, &device)?;
            out!("{}", sweep::to_markdown(&done.recipe, &done.rows));
            outln!(
                "sweep of {} point(s) in {}",
                done.rows.len(),
                done.out.display()
            );
        }
        Cmd::Experiment {
            file,
            short,
            out,
            data_root,
            check,
            no_progress,
            device,
        } => {
            let device = epoch::parse_device(&device)?;
            let opts = experiment::ExperimentOptions {
                file: file.clone(),
                short,
                out: out.clone(),
                data_root,
                progress: !no_progress && !quiet,
            };
            if check {
                let plan = experiment::plan(&opts)?;
                let out = out.unwrap_or_else(|| experiment::default_out(&file, short));
                out!("{}", experiment::describe(&plan, &out));
            } else {
                let done = experiment::run(&opts, &device)?;
                out!("{}", done.markdown);
                outln!(
                    "experiment: {} table(s) in {}",
                    done.json.sweeps.len(),
                    done.out.join("experiment.md").display()
                );
            }
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
        Cmd::Compress(args) => run_compress(*args, quiet)?,
        Cmd::Decompress { input, output } => {
            deepcomp_driver::fsutil::ensure_distinct(&input, &output)?;
            let file = read_dcz(&input)?;
            compress::write_safetensors_typed(&output, &compress::decoded_typed(&file))?;
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
                for t in &file.typed {
                    outln!("raw  {:<28} {:?} {}", t.name, t.shape, t.dtype);
                }
                if !file.layer_dtypes.is_empty() {
                    let d: Vec<String> = file
                        .layers
                        .iter()
                        .zip(&file.layer_dtypes)
                        .map(|(l, d)| format!("{} {d}", l.name))
                        .collect();
                    outln!("layer dtypes: {}", d.join(", "));
                }
                outln!(
                    "metadata: {}",
                    file.metadata
                        .as_deref()
                        .unwrap_or("none (a version-1 file, or none given)")
                );
            }
        }
        Cmd::Eval {
            model,
            recipe,
            dataset,
            data,
            mean,
            std,
            key_map,
            engine,
            json,
        } => {
            let mut r = deepcomp_driver::meta::recipe_for(
                &model,
                recipe.as_deref(),
                dataset.as_deref(),
                "lenet300-fashion",
            )?;
            if mean.is_some() {
                r.data.mean = mean;
                r.data.std = std;
                r.validate("--mean/--std")?;
            }
            let map = parse_key_map(&key_map)?;
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
                    recipe: r.name.clone(),
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
            dataset,
            data,
            json,
        } => {
            let r = deepcomp_driver::meta::recipe_for(
                &model,
                recipe.as_deref(),
                dataset.as_deref(),
                "lenet300-fashion",
            )?;
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
        Cmd::Lsq { out } => {
            let lab = deepcomp_driver::lsq::run(&out)?;
            outln!("{}", lab.table.trim_end());
            deepcomp_driver::note!(
                "{} files (table, trajectories, figures) in {}",
                lab.files.len(),
                out.display()
            );
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
