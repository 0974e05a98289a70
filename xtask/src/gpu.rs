//! `cargo xtask gpu-build`: builds `deepcomp` with the `cuda` feature on a machine without a GPU or a
//! CUDA install, and stages what the GPU machine needs in `target/gpu/`.
//!
//! 1. A virtual environment `target/cuda-env` with the CUDA 13.0 toolkit pieces published on PyPI
//!    ([`WHEELS`], pinned: nvcc, the runtime, cuBLAS, cuRAND, NVRTC and their headers). They unpack
//!    into `site-packages/nvidia/cu13/{bin,include,lib,nvvm}`, which serves as the CUDA root.
//! 2. What a plain CUDA install has and the wheels lack, for linking: unversioned `lib*.so` links, and
//!    `lib/stubs/libcuda.so`, a stub of the driver library (every function of the wheel's `cuda.h`,
//!    each returning `CUDA_ERROR_STUB_LIBRARY`), compiled here with `cc`. candle 0.11 links cudarc
//!    with `dynamic-linking`, so the binary needs `libcuda.so.1`; on the GPU machine the real driver
//!    library answers, the stub is never shipped on a library path there.
//! 3. `cargo build --release -p deepcomp-driver --features cuda --target-dir target/cuda` with
//!    `CUDA_ROOT`/`CUDA_HOME`/`CUDA_PATH`, `NVCC`, `PATH`, `CUDARC_CUDA_VERSION=13000` and
//!    `CUDA_COMPUTE_CAP` (default 90, the H100) set for cudarc's and candle-kernels' build scripts, and
//!    a run path `/usr/local/cuda/lib64` so that the binary finds the GPU machine's CUDA 13.0 libraries.
//! 4. `target/gpu/`: the stripped `deepcomp`, `torch_epoch.py` and `run.sh` (from `xtask/gpu/`), and
//!    `host-stub/libcuda.so.1` for running the binary on a machine without a driver (`--help`, or to see
//!    the error `--device cuda` gives there).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The PyPI wheels of CUDA 13.0 (nvcc 13.0.88; cuBLAS and cuRAND as shipped with CUDA 13.0 update 1).
pub const WHEELS: [&str; 8] = [
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-cublas==13.0.2.14",
    "nvidia-curand==10.4.0.35",
];

/// Libraries the link step asks for by unversioned name (`-lcudart`, ...), as found in the wheels.
const LINK_LIBS: [&str; 5] = ["cudart", "cublas", "cublasLt", "curand", "nvrtc"];

/// Where the GPU machine keeps its CUDA libraries (its `/usr/local/cuda` is CUDA 13.0).
const DEVICE_CUDA_LIB: &str = "/usr/local/cuda/lib64";

fn usage() -> &'static str {
    "cargo xtask gpu-build [--compute-cap N]   (default 90: H100)"
}

/// Runs the whole build; `rest` are the command's arguments.
pub fn build(root: &Path, rest: &[String]) -> Result<()> {
    let mut compute_cap = "90".to_string();
    let mut args = rest.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--compute-cap" => {
                compute_cap = args
                    .next()
                    .with_context(|| format!("--compute-cap needs a value\n{}", usage()))?
                    .clone();
            }
            other => bail!("gpu-build: unknown argument `{other}`\n{}", usage()),
        }
    }
    if compute_cap.is_empty() || !compute_cap.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("--compute-cap `{compute_cap}` is not a compute capability such as 90");
    }

    let env_dir = root.join("target/cuda-env");
    let cu = install_wheels(&env_dir)?;
    prepare_link_dir(&cu)?;

    let target_dir = root.join("target/cuda");
    let mut c = crate::cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "deepcomp-driver",
        "--bin",
        "deepcomp",
        "--features",
        "cuda",
        "--target-dir",
    ]);
    c.arg(&target_dir);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![cu.join("bin")];
    paths.extend(std::env::split_paths(&path));
    c.env("PATH", std::env::join_paths(paths)?);
    for var in ["CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"] {
        c.env(var, &cu);
    }
    c.env("NVCC", cu.join("bin/nvcc"))
        .env("CUDARC_CUDA_VERSION", "13000")
        .env("CUDA_COMPUTE_CAP", &compute_cap)
        // Line tables would make the binary several times larger; the GPU run needs none.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env(
            "RUSTFLAGS",
            format!(
                "-C link-arg=-Wl,-rpath,{DEVICE_CUDA_LIB}:/usr/local/cuda/targets/x86_64-linux/lib"
            ),
        );
    crate::run(c)?;

    stage(root, &target_dir.join("release/deepcomp"), &cu)
}

/// The wheels' CUDA root, `site-packages/nvidia/cu13` of the environment.
fn cuda_root(env_dir: &Path) -> Result<PathBuf> {
    let lib = env_dir.join("lib");
    let entries = std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13"))
        .filter(|p| p.join("bin/nvcc").exists())
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("no nvidia/cu13/bin/nvcc under {}", lib.display()))
}

/// Creates `env_dir` (a Python venv) with [`WHEELS`] unless its stamp says they are there already;
/// returns the CUDA root.
fn install_wheels(env_dir: &Path) -> Result<PathBuf> {
    let stamp = env_dir.join("deepcomp-wheels.txt");
    let want = WHEELS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        let cu = cuda_root(env_dir)?;
        eprintln!("xtask gpu-build: CUDA wheels already in {}", cu.display());
        return Ok(cu);
    }
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let mut venv = Command::new(python);
    venv.arg("-m").arg("venv").arg(env_dir);
    crate::run(venv)?;
    let mut pip = Command::new(env_dir.join("bin/pip"));
    pip.args(["install", "--disable-pip-version-check", "--quiet"])
        .args(WHEELS);
    crate::run(pip)?;
    let cu = cuda_root(env_dir)?;
    std::fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(cu)
}

/// Makes `lib/lib<name>.so` links to the wheels' versioned libraries and the driver stub
/// `lib/stubs/libcuda.so`.
fn prepare_link_dir(cu: &Path) -> Result<()> {
    let lib = cu.join("lib");
    let names: Vec<String> = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for name in LINK_LIBS {
        let prefix = format!("lib{name}.so.");
        let mut versioned: Vec<&String> = names.iter().filter(|n| n.starts_with(&prefix)).collect();
        versioned.sort();
        let Some(target) = versioned.first() else {
            bail!(
                "{}: no lib{name}.so.* (are the wheels installed?)",
                lib.display()
            );
        };
        let link = lib.join(format!("lib{name}.so"));
        if std::fs::symlink_metadata(&link).is_ok() {
            std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
        std::os::unix::fs::symlink(target, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }

    let stubs = lib.join("stubs");
    std::fs::create_dir_all(&stubs).with_context(|| format!("creating {}", stubs.display()))?;
    let header = cu.join("include/cuda.h");
    let text = std::fs::read_to_string(&header)
        .with_context(|| format!("reading {}", header.display()))?;
    let functions = driver_functions(&text);
    if functions.len() < 100 {
        bail!(
            "{}: found only {} driver functions; not a CUDA driver API header?",
            header.display(),
            functions.len()
        );
    }
    let mut src = String::from(
        "/* Generated by `cargo xtask gpu-build`: link-time stub of the CUDA driver library. */\n",
    );
    for f in &functions {
        // CUDA_ERROR_STUB_LIBRARY: every driver API function returns a CUresult.
        src.push_str(&format!("int {f}(void) {{ return 34; }}\n"));
    }
    let c_file = stubs.join("libcuda-stub.c");
    std::fs::write(&c_file, src).with_context(|| format!("writing {}", c_file.display()))?;
    let mut cc = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()));
    cc.args(["-shared", "-fPIC", "-O0", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(stubs.join("libcuda.so"))
        .arg(&c_file);
    crate::run(cc)?;
    eprintln!(
        "xtask gpu-build: driver stub with {} functions in {}",
        functions.len(),
        stubs.display()
    );
    Ok(())
}

/// Names of the driver API functions in `cuda.h`: identifiers `cuXxx` directly followed by `(`,
/// and the targets of its `#define cuXxx cuXxx_v2` renames; sorted, unique.
pub fn driver_functions(header: &str) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for line in header.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("#define") {
            let mut words = rest.split_whitespace();
            if let (Some(a), Some(b), None) = (words.next(), words.next(), words.next()) {
                if is_driver_name(a) && is_driver_name(b) {
                    out.insert(b.to_string());
                }
            }
            continue;
        }
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        let mut i = 0;
        while i < chars.len() {
            let (start, c) = chars[i];
            if is_ident(c) && (i == 0 || !is_ident(chars[i - 1].1)) {
                let mut j = i;
                while j < chars.len() && is_ident(chars[j].1) {
                    j += 1;
                }
                let end = chars.get(j).map_or(line.len(), |&(p, _)| p);
                let word = &line[start..end];
                let next = chars[j..].iter().find(|(_, c)| !c.is_whitespace());
                if is_driver_name(word) && matches!(next, Some((_, '('))) {
                    out.insert(word.to_string());
                }
                i = j;
            } else {
                i += 1;
            }
        }
    }
    out.into_iter().collect()
}

/// `cu` followed by an upper-case letter and identifier characters (cuInit, cuMemAlloc_v2).
fn is_driver_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 2
        && s.starts_with("cu")
        && b[2].is_ascii_uppercase()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Copies the binary (stripped), the scripts and the host stub into `target/gpu/` and checks that
/// the binary starts here.
fn stage(root: &Path, binary: &Path, cu: &Path) -> Result<()> {
    let out = root.join("target/gpu");
    std::fs::create_dir_all(out.join("host-stub"))
        .with_context(|| format!("creating {}", out.display()))?;
    let staged = out.join("deepcomp");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&staged)
        .arg(binary)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(binary, &staged)
            .with_context(|| format!("copying {} to {}", binary.display(), staged.display()))?;
    }
    for f in ["torch_epoch.py", "run.sh"] {
        let from = root.join("xtask/gpu").join(f);
        std::fs::copy(&from, out.join(f)).with_context(|| format!("copying {}", from.display()))?;
    }
    let stub = out.join("host-stub/libcuda.so.1");
    std::fs::copy(cu.join("lib/stubs/libcuda.so"), &stub)
        .with_context(|| format!("writing {}", stub.display()))?;
    for f in ["deepcomp", "run.sh", "torch_epoch.py"] {
        set_executable(&out.join(f))?;
    }

    // Smoke test on this machine: the wheels' libraries and the stub driver stand in for a CUDA
    // install, so the binary starts; `--device cuda` must then fail with the stub's error.
    let lib_path = std::env::join_paths([cu.join("lib"), out.join("host-stub")])?;
    let help = Command::new(&staged)
        .arg("--help")
        .env("LD_LIBRARY_PATH", &lib_path)
        .output()
        .with_context(|| format!("running {}", staged.display()))?;
    if !help.status.success() {
        bail!(
            "{} --help failed: {}",
            staged.display(),
            String::from_utf8_lossy(&help.stderr)
        );
    }
    let probe = Command::new(&staged)
        .args([
            "train-epoch",
            "--arch",
            "resnet20",
            "--device",
            "cuda",
            "--examples",
            "128",
        ])
        .env("LD_LIBRARY_PATH", &lib_path)
        .env("RUST_BACKTRACE", "0")
        .output()
        .with_context(|| format!("running {}", staged.display()))?;
    let size = std::fs::metadata(&staged)
        .with_context(|| staged.display().to_string())?
        .len();
    eprintln!(
        "xtask gpu-build: {} ({:.1} MiB); --help runs here; `--device cuda` here (stub driver) says: {}",
        staged.display(),
        size as f64 / (1024.0 * 1024.0),
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    eprintln!(
        "xtask gpu-build: staged {}: on the GPU machine run `bash target/gpu/run.sh`",
        out.display()
    );
    Ok(())
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .permissions();
    perm.set_mode(0o755);
    std::fs::set_permissions(path, perm).with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_functions_take_declarations_and_renames() {
        let h = "#define cuMemAlloc cuMemAlloc_v2\n\
                 CUresult CUDAAPI cuInit(unsigned int Flags);\n\
                 CUresult CUDAAPI cuMemAlloc (CUdeviceptr *dptr, size_t bytesize);\n\
                 typedef struct CUctx_st *CUcontext; /* cuda(x) */\n\
                 #define CU_TRSA_OVERRIDE_FORMAT 0x01\n";
        assert_eq!(
            driver_functions(h),
            vec!["cuInit", "cuMemAlloc", "cuMemAlloc_v2"]
        );
    }
}
