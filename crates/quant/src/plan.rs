//! Bit widths per layer (mixed precision).

use crate::error::{QuantError, Result};
use crate::kmeans::check_bits;
use std::collections::BTreeMap;

/// Which bit width each layer gets: a default for convolution layers, one for
/// fully connected layers, and per-layer overrides by name.
///
/// The default ([`BitPlan::paper`]) is the paper's 8 bits for conv and 5 bits
/// for fc layers. All widths must lie in `1..=16`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitPlan {
    /// Bits for convolution layers without an override.
    pub conv: u8,
    /// Bits for fully connected layers without an override.
    pub fc: u8,
    /// Per-layer overrides, by layer name (sorted, deterministic).
    pub overrides: BTreeMap<String, u8>,
}

impl Default for BitPlan {
    fn default() -> Self {
        Self::paper()
    }
}

impl BitPlan {
    /// conv 8 bits, fc 5 bits, no overrides.
    pub fn paper() -> Self {
        Self {
            conv: crate::share::default_bits(true),
            fc: crate::share::default_bits(false),
            overrides: BTreeMap::new(),
        }
    }

    /// The same width for every layer.
    pub fn uniform(bits: u8) -> Result<Self> {
        check_bits(bits)?;
        Ok(Self {
            conv: bits,
            fc: bits,
            overrides: BTreeMap::new(),
        })
    }

    /// Builder: give layer `name` its own width.
    pub fn with_override(mut self, name: impl Into<String>, bits: u8) -> Result<Self> {
        check_bits(bits)?;
        self.overrides.insert(name.into(), bits);
        Ok(self)
    }

    /// Builder: apply overrides written as `name=bits` (as a CLI would take
    /// them, e.g. `fc1=4`).
    pub fn with_override_specs<'a, I: IntoIterator<Item = &'a str>>(
        mut self,
        specs: I,
    ) -> Result<Self> {
        for spec in specs {
            let (name, bits) = parse_override(spec)?;
            self = self.with_override(name, bits)?;
        }
        Ok(self)
    }

    /// The width for layer `name` of the given kind.
    pub fn bits_for(&self, name: &str, is_conv: bool) -> u8 {
        match self.overrides.get(name) {
            Some(&b) => b,
            None if is_conv => self.conv,
            None => self.fc,
        }
    }
}

/// Parses `name=bits` (bits in `1..=16`).
pub fn parse_override(spec: &str) -> Result<(String, u8)> {
    let bad = |reason| QuantError::InvalidParam {
        name: "bit override",
        value: format!("{spec:?}"),
        reason,
    };
    let (name, bits) = spec.split_once('=').ok_or(bad("expected `layer=bits`"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("the layer name is empty"));
    }
    let bits: u8 = bits
        .trim()
        .parse()
        .map_err(|_| bad("bits must be an integer in 1..=16"))?;
    check_bits(bits)?;
    Ok((name.to_string(), bits))
}
