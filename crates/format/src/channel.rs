//! Per-channel scales of sparse layers: the optional `CHSC` sections of a `.dcz` file.
//!
//! A layer quantized with one uniform step per output channel stores its integer levels as an
//! ordinary `LAYR` section (codebook = the levels `-2^(bits-1) … 2^(bits-1) - 1` as `f32`, codes =
//! level + `2^(bits-1)`), and a `CHSC` section holding one `f32` step per output channel (dimension 0).
//! Element `i` of channel `c` decodes to `codebook[code] × scales[c]`, one `f32` multiplication,
//! which reproduces the quantizer's `level × Δ_c` bit for bit. Files without per-channel layers have no
//! `CHSC` section and are byte-identical to files written before it existed.
//!
//! Layout (after the last `DENS` section, before `DEND`; `docs/FORMAT.md`): tag `CHSC`, payload length
//! (`u64`), payload = layer name (`u16` length + UTF-8), channel count (`u32`), that many `f32` LE,
//! then the CRC-32 of tag, length and payload.

use crate::dcz::{ContainerError, DczFile, SparseLayer};

/// Section tag.
pub const TAG_CHANNEL_SCALES: [u8; 4] = *b"CHSC";

/// One `f32` scale per output channel of the sparse layer `layer`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelScales {
    /// Name of the sparse layer the scales belong to.
    pub layer: String,
    /// One finite, positive scale per index of the layer's dimension 0.
    pub scales: Vec<f32>,
}

fn invalid(layer: &str, reason: String) -> ContainerError {
    ContainerError::InvalidLayer {
        layer: layer.to_string(),
        reason,
    }
}

/// Checks the scales against the file's layers: every entry names a sparse layer, at most one entry per
/// layer, one finite positive scale per channel.
pub(crate) fn check(file: &DczFile) -> Result<(), ContainerError> {
    let mut seen = std::collections::HashSet::new();
    for cs in &file.channel_scales {
        let layer = file
            .layers
            .iter()
            .find(|l| l.name == cs.layer)
            .ok_or_else(|| {
                invalid(
                    &cs.layer,
                    "channel scales name no sparse layer of the file".into(),
                )
            })?;
        if !seen.insert(cs.layer.as_str()) {
            return Err(invalid(&cs.layer, "has two sets of channel scales".into()));
        }
        let channels = layer.shape.first().copied().unwrap_or(0);
        if cs.scales.len() != channels {
            return Err(invalid(
                &cs.layer,
                format!(
                    "{} channel scales for {channels} output channels",
                    cs.scales.len()
                ),
            ));
        }
        if let Some(s) = cs.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(invalid(
                &cs.layer,
                format!("channel scale {s} is not finite and positive"),
            ));
        }
    }
    Ok(())
}

/// Appends one `CHSC` section per entry (nothing when there is none).
pub(crate) fn write_sections(file: &DczFile, out: &mut Vec<u8>) -> Result<(), ContainerError> {
    check(file)?;
    for cs in &file.channel_scales {
        let mut p = Vec::with_capacity(6 + cs.layer.len() + 4 * cs.scales.len());
        p.extend_from_slice(&(cs.layer.len() as u16).to_le_bytes());
        p.extend_from_slice(cs.layer.as_bytes());
        p.extend_from_slice(&(cs.scales.len() as u32).to_le_bytes());
        for s in &cs.scales {
            p.extend_from_slice(&s.to_le_bytes());
        }
        let start = out.len();
        out.extend_from_slice(&TAG_CHANNEL_SCALES);
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(&p);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

fn truncated(
    offset: usize,
    field: &'static str,
    needed: usize,
    available: usize,
) -> ContainerError {
    ContainerError::Truncated {
        section: "channel-scales section".into(),
        field,
        offset: offset as u64,
        needed: needed as u64,
        available: available as u64,
    }
}

/// Reads the `CHSC` sections starting at `pos` (none if the next tag is another one) and returns them
/// with the position after the last. `layers` are the file's sparse layers, to check the scales against.
pub(crate) fn read_sections(
    b: &[u8],
    mut pos: usize,
    layers: &[SparseLayer],
) -> Result<(Vec<ChannelScales>, usize), ContainerError> {
    let mut out = Vec::new();
    while b.len() >= pos + 4 && b[pos..pos + 4] == TAG_CHANNEL_SCALES {
        let need = |at: usize, n: usize, field| {
            if b.len() < at + n {
                Err(truncated(at, field, n, b.len().saturating_sub(at)))
            } else {
                Ok(())
            }
        };
        need(pos + 4, 8, "payload length")?;
        let len = u64::from_le_bytes(b[pos + 4..pos + 12].try_into().unwrap_or_default());
        let start = pos + 12;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        need(start, len.saturating_add(4), "payload")?;
        let end = start + len;
        let stored = u32::from_le_bytes(b[end..end + 4].try_into().unwrap_or_default());
        let computed = crc32fast::hash(&b[pos..end]);
        if stored != computed {
            return Err(ContainerError::Checksum {
                section: "channel-scales section".into(),
                offset: pos as u64,
                end: end as u64,
                stored,
                computed,
            });
        }
        let p = &b[start..end];
        let bad = |field, reason: String| ContainerError::Invalid {
            section: "channel-scales section".into(),
            field,
            offset: start as u64,
            reason,
        };
        if p.len() < 2 {
            return Err(bad("name", "payload too short".into()));
        }
        let n = usize::from(u16::from_le_bytes([p[0], p[1]]));
        if p.len() < 2 + n + 4 {
            return Err(bad("name", "payload too short".into()));
        }
        let layer = std::str::from_utf8(&p[2..2 + n])
            .map_err(|e| bad("name", e.to_string()))?
            .to_string();
        let count = u32::from_le_bytes(p[2 + n..6 + n].try_into().unwrap_or_default()) as usize;
        let rest = &p[6 + n..];
        if rest.len() != count.saturating_mul(4) {
            return Err(bad(
                "scales",
                format!(
                    "{count} scales need {} bytes, the payload has {}",
                    count * 4,
                    rest.len()
                ),
            ));
        }
        let scales = rest
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push(ChannelScales { layer, scales });
        pos = end + 4;
    }
    let probe = DczFile {
        model: String::new(),
        recipe_hash: [0; 32],
        layers: layers.to_vec(),
        dense: Vec::new(),
        channel_scales: out,
        ..Default::default()
    };
    check(&probe)?;
    Ok((probe.channel_scales, pos))
}

impl DczFile {
    /// The channel scales of the sparse layer `name`, if it has them.
    pub fn channel_scales_of(&self, name: &str) -> Option<&[f32]> {
        self.channel_scales
            .iter()
            .find(|c| c.layer == name)
            .map(|c| c.scales.as_slice())
    }

    /// The dense values of sparse layer `i`: [`SparseLayer::to_dense`], times the channel's scale for a
    /// layer with channel scales. Use this (not `to_dense`) to decode any file that may hold them.
    pub fn layer_values(&self, i: usize) -> Vec<f32> {
        let Some(layer) = self.layers.get(i) else {
            return Vec::new();
        };
        let mut v = layer.to_dense();
        if let Some(scales) = self.channel_scales_of(&layer.name) {
            let per = v.len().checked_div(scales.len()).unwrap_or(0);
            for &p in &layer.positions {
                let p = p as usize;
                if let (Some(c), Some(x)) = (p.checked_div(per), v.get_mut(p)) {
                    if let Some(s) = scales.get(c) {
                        *x *= *s;
                    }
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcz::LayerKind;

    fn file(scales: Vec<f32>) -> DczFile {
        DczFile {
            model: "tiny".into(),
            recipe_hash: [0; 32],
            layers: vec![SparseLayer {
                name: "fc.weight".into(),
                kind: LayerKind::Fc,
                shape: vec![2, 3],
                bits: 2,
                index_bits: 2,
                codebook: vec![-2.0, -1.0, 0.0, 1.0],
                positions: vec![0, 2, 4],
                codes: vec![3, 0, 1],
            }],
            dense: vec![],
            channel_scales: vec![ChannelScales {
                layer: "fc.weight".into(),
                scales,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn scales_round_trip_and_multiply_per_channel() {
        let f = file(vec![0.25, 0.1]);
        let bytes = f.to_bytes().unwrap();
        assert!(bytes.windows(4).any(|w| w == TAG_CHANNEL_SCALES));
        let back = DczFile::from_bytes(&bytes).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.to_bytes().unwrap(), bytes);
        let v = back.layer_values(0);
        assert_eq!(v, vec![0.25, 0.0, -0.5, 0.0, -0.1f32, 0.0]);
        // Without scales, no section is written at all.
        let mut plain = f.clone();
        plain.channel_scales.clear();
        let b = plain.to_bytes().unwrap();
        assert!(!b.windows(4).any(|w| w == TAG_CHANNEL_SCALES));
        assert_eq!(plain.layer_values(0), plain.layers[0].to_dense());
    }

    #[test]
    fn bad_scales_are_refused() {
        for (scales, why) in [
            (vec![0.25], "1 channel scales for 2"),
            (vec![0.25, 0.0], "not finite and positive"),
            (vec![0.25, f32::NAN], "not finite and positive"),
        ] {
            let e = file(scales).to_bytes().unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let mut f = file(vec![1.0, 2.0]);
        f.channel_scales[0].layer = "other".into();
        let e = f.to_bytes().unwrap_err().to_string();
        assert!(e.contains("no sparse layer"), "{e}");
        // A flipped bit in the section is a checksum error, not a different model.
        let mut bytes = file(vec![0.25, 0.1]).to_bytes().unwrap();
        let at = bytes
            .windows(4)
            .position(|w| w == TAG_CHANNEL_SCALES)
            .unwrap();
        bytes[at + 20] ^= 1;
        assert!(DczFile::from_bytes(&bytes).is_err());
        // Truncation inside the section is an error too.
        let bytes = file(vec![0.25, 0.1]).to_bytes().unwrap();
        for cut in at..bytes.len() {
            assert!(DczFile::from_bytes(&bytes[..cut]).is_err());
        }
    }
}
