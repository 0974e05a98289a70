//! How much the driver writes to standard error: set once by the CLI (`-q`, `-v`), read by every
//! stage. Standard output carries results only and is not affected.

use std::sync::atomic::{AtomicU8, Ordering};

/// How much to say on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only (`-q`).
    Quiet = 0,
    /// One line per stage, and progress bars (the default).
    Normal = 1,
    /// Also one line per epoch, the mask summary and the sensitivity table (`-v`).
    Verbose = 2,
}

static LEVEL: AtomicU8 = AtomicU8::new(Verbosity::Normal as u8);

/// Sets the level for the whole process.
pub fn set(v: Verbosity) {
    LEVEL.store(v as u8, Ordering::Relaxed);
}

/// The level in force.
pub fn get() -> Verbosity {
    match LEVEL.load(Ordering::Relaxed) {
        0 => Verbosity::Quiet,
        1 => Verbosity::Normal,
        _ => Verbosity::Verbose,
    }
}

/// Whether messages of level `v` are written.
pub fn enabled(v: Verbosity) -> bool {
    get() >= v
}

/// A stage line on standard error, unless `-q`.
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => {
        if $crate::verbosity::enabled($crate::verbosity::Verbosity::Normal) {
            eprintln!($($t)*);
        }
    };
}

/// A detail line on standard error (per epoch, tables), only with `-v`.
#[macro_export]
macro_rules! detail {
    ($($t:tt)*) => {
        if $crate::verbosity::enabled($crate::verbosity::Verbosity::Verbose) {
            eprintln!($($t)*);
        }
    };
}
