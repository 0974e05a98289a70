//! IDX files (the MNIST family's format), raw or gzip-compressed.
//!
//! An IDX file is a 4-byte magic (`0x00 0x00 <type> <ndim>`), `ndim` big-endian `u32`
//! dimensions, then the elements in row-major order, big-endian. The reader streams the
//! header first, so the data lands in one allocation of exactly the declared size, and
//! checks that the file holds exactly that many bytes: a truncated file or trailing garbage
//! is an error naming the byte offset.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::DatasetError;

/// Element type of an IDX file (the third magic byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxType {
    /// `0x08`: unsigned byte.
    U8,
    /// `0x09`: signed byte.
    I8,
    /// `0x0B`: big-endian `i16`.
    I16,
    /// `0x0C`: big-endian `i32`.
    I32,
    /// `0x0D`: big-endian `f32`.
    F32,
    /// `0x0E`: big-endian `f64`.
    F64,
}

impl IdxType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x08 => IdxType::U8,
            0x09 => IdxType::I8,
            0x0B => IdxType::I16,
            0x0C => IdxType::I32,
            0x0D => IdxType::F32,
            0x0E => IdxType::F64,
            _ => return None,
        })
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            IdxType::U8 | IdxType::I8 => 1,
            IdxType::I16 => 2,
            IdxType::I32 | IdxType::F32 => 4,
            IdxType::F64 => 8,
        }
    }
}

/// A parsed IDX file: element type, dimensions and the raw (big-endian) element bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Element type.
    pub dtype: IdxType,
    /// Dimensions, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// Element bytes, `dims.iter().product() * dtype.size()` of them.
    pub data: Vec<u8>,
}

/// Largest allocation made up front from a size hint (the real size may still be larger).
const MAX_PREALLOC: u64 = 1 << 31;

/// Opens `path`, transparently decompressing gzip (detected by its magic bytes, not the name).
/// Returns the reader and a hint of the decompressed size.
pub(crate) fn open_maybe_gz(path: &Path) -> Result<(Box<dyn Read>, u64), DatasetError> {
    let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| DatasetError::io(path, e))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 18, file);
    let head = reader.fill_buf().map_err(|e| DatasetError::io(path, e))?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        // ISIZE (uncompressed size mod 2^32) is the last 4 bytes of a gzip member.
        let mut hint = 0u64;
        if len >= 18 {
            let file = reader.get_mut();
            let mut isize_bytes = [0u8; 4];
            file.seek(SeekFrom::End(-4))
                .and_then(|_| file.read_exact(&mut isize_bytes))
                .map_err(|e| DatasetError::io(path, e))?;
            hint = u64::from(u32::from_le_bytes(isize_bytes));
            // The BufReader still holds the file's first bytes (nothing consumed yet): put the
            // file cursor back right after them.
            let buffered = reader.buffer().len() as u64;
            reader
                .get_mut()
                .seek(SeekFrom::Start(buffered))
                .map_err(|e| DatasetError::io(path, e))?;
        }
        Ok((Box::new(GzMembers::new(reader, len)), hint))
    } else {
        Ok((Box::new(reader), len))
    }
}

/// A `BufRead` that counts the bytes consumed from it (the compressed offset).
struct Counting<R> {
    inner: R,
    consumed: u64,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.consumed += amt as u64;
        self.inner.consume(amt);
    }
}

/// Bytes after the last gzip member that do not start another member.
#[derive(Debug)]
struct TrailingGarbage {
    /// Compressed offset where the garbage starts.
    offset: u64,
    /// How many bytes follow.
    len: u64,
}

impl std::fmt::Display for TrailingGarbage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the end of the file after the gzip data (compressed byte {}), found {} byte(s) of trailing garbage that do not start another gzip member",
            self.offset, self.len
        )
    }
}

impl std::error::Error for TrailingGarbage {}

/// Decompresses the gzip members of a file one after another (as `gzip -d` does); anything
/// after the last member that is not another member is a [`TrailingGarbage`] error rather
/// than a confusing "unexpected end of file".
struct GzMembers<R: BufRead> {
    decoder: Option<flate2::bufread::GzDecoder<Counting<R>>>,
    file_len: u64,
}

impl<R: BufRead> GzMembers<R> {
    fn new(inner: R, file_len: u64) -> Self {
        GzMembers {
            decoder: Some(flate2::bufread::GzDecoder::new(Counting {
                inner,
                consumed: 0,
            })),
            file_len,
        }
    }
}

impl<R: BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(dec) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This member is complete: the file ends, another member starts, or garbage.
            let Some(dec) = self.decoder.take() else {
                return Ok(0);
            };
            let mut inner = dec.into_inner();
            let head = inner.fill_buf()?;
            if head.is_empty() {
                return Ok(0);
            }
            if head[0] == 0x1f && (head.len() < 2 || head[1] == 0x8b) {
                self.decoder = Some(flate2::bufread::GzDecoder::new(inner));
                continue;
            }
            let offset = inner.consumed;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                TrailingGarbage {
                    offset,
                    len: self.file_len.saturating_sub(offset),
                },
            ));
        }
    }
}

/// Reads into `buf` until `want` bytes are there or the stream ends; a decoding error is
/// reported as a format error at the decompressed offset `base + bytes read`.
fn read_up_to(
    reader: &mut dyn Read,
    buf: &mut Vec<u8>,
    want: u64,
    path: &Path,
    base: u64,
) -> Result<(), DatasetError> {
    let start = buf.len() as u64;
    let mut limited = reader.take(want);
    match limited.read_to_end(buf) {
        Ok(_) => Ok(()),
        Err(e) if e.get_ref().is_some_and(|i| i.is::<TrailingGarbage>()) => Err(
            DatasetError::format(path, base + buf.len() as u64 - start, e.to_string()),
        ),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) =>
        {
            Err(DatasetError::format(
                path,
                base + buf.len() as u64 - start,
                format!("a valid gzip stream ({e})"),
            ))
        }
        Err(e) => Err(DatasetError::io(path, e)),
    }
}

/// Reads and validates an IDX file (raw or gzip).
///
/// Checks the magic, the element type, that the dimensions' product does not overflow, and
/// that the (decompressed) file is exactly `header + product(dims) * element size` bytes long.
pub fn read_idx(path: &Path) -> Result<IdxArray, DatasetError> {
    let (mut reader, size_hint) = open_maybe_gz(path)?;
    let mut head = Vec::with_capacity(4);
    read_up_to(&mut reader, &mut head, 4, path, 0)?;
    if head.len() < 4 {
        return Err(DatasetError::format(
            path,
            head.len() as u64,
            format!("4-byte IDX magic, file ends after {} bytes", head.len()),
        ));
    }
    if head[0] != 0 || head[1] != 0 {
        return Err(DatasetError::format(
            path,
            0,
            format!(
                "IDX magic starting with 0x00 0x00, found 0x{:02x} 0x{:02x}",
                head[0], head[1]
            ),
        ));
    }
    let dtype = IdxType::from_code(head[2]).ok_or_else(|| {
        DatasetError::format(
            path,
            2,
            format!(
                "IDX element type 0x08, 0x09, 0x0b, 0x0c, 0x0d or 0x0e, found 0x{:02x}",
                head[2]
            ),
        )
    })?;
    let ndim = usize::from(head[3]);
    if ndim == 0 {
        return Err(DatasetError::format(
            path,
            3,
            "at least one IDX dimension, found 0",
        ));
    }
    let mut dim_bytes = Vec::with_capacity(4 * ndim);
    read_up_to(&mut reader, &mut dim_bytes, 4 * ndim as u64, path, 4)?;
    if dim_bytes.len() < 4 * ndim {
        return Err(DatasetError::format(
            path,
            4 + dim_bytes.len() as u64,
            format!(
                "{ndim} big-endian u32 dimensions, file ends after {} bytes",
                4 + dim_bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let header = 4 + 4 * ndim as u64;
    let data_len = dims
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n < (1u64 << 48))
        .ok_or_else(|| {
            DatasetError::format(
                path,
                4,
                format!("dimensions {dims:?} whose product fits in memory"),
            )
        })?;
    let prealloc = data_len
        .min(size_hint.saturating_sub(header).max(1 << 16))
        .min(MAX_PREALLOC);
    let mut data = Vec::with_capacity(prealloc as usize);
    // Ask for one byte more than declared, to detect trailing data.
    read_up_to(&mut reader, &mut data, data_len + 1, path, header)?;
    let got = data.len() as u64;
    if got < data_len {
        return Err(DatasetError::format(
            path,
            header + got,
            format!(
                "{data_len} data bytes for dimensions {dims:?} (file size {} bytes), the file ends after {} bytes",
                header + data_len,
                header + got
            ),
        ));
    }
    if got > data_len {
        return Err(DatasetError::format(
            path,
            header + data_len,
            format!(
                "end of file after {} bytes (dimensions {dims:?}), found more data",
                header + data_len
            ),
        ));
    }
    Ok(IdxArray { dtype, dims, data })
}

/// The images and labels of one MNIST-style split.
#[derive(Debug)]
pub(crate) struct IdxPair {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

/// Reads an image file (`u8`, 3 dimensions `[n, rows, cols]`) and its label file (`u8`, 1
/// dimension `[n]`), checking that the counts agree and every label is `< classes`.
pub(crate) fn read_idx_pair(
    images_path: &Path,
    labels_path: &Path,
    classes: usize,
) -> Result<IdxPair, DatasetError> {
    let (images, labels) = std::thread::scope(|s| {
        let handle = s.spawn(|| read_idx(images_path));
        let labels = read_idx(labels_path);
        let images = handle.join().unwrap_or_else(|_| {
            Err(DatasetError::Inconsistent {
                file: images_path.to_path_buf(),
                message: "reader thread panicked".into(),
            })
        });
        (images, labels)
    });
    let images = images?;
    let labels = labels?;
    check_u8(images_path, &images, 3)?;
    check_u8(labels_path, &labels, 1)?;
    let (n, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
    if labels.dims[0] != n {
        return Err(DatasetError::Inconsistent {
            file: labels_path.to_path_buf(),
            message: format!(
                "{} labels but {} has {n} images",
                labels.dims[0],
                images_path.display()
            ),
        });
    }
    let labels = labels_to_u32(labels_path, &labels.data, 8, 1, 0, classes)?;
    Ok(IdxPair {
        images: images.data,
        labels,
        n,
        h: rows,
        w: cols,
    })
}

fn check_u8(path: &Path, a: &IdxArray, ndim: usize) -> Result<(), DatasetError> {
    if a.dtype != IdxType::U8 {
        return Err(DatasetError::format(
            path,
            2,
            format!("element type 0x08 (unsigned byte), found {:?}", a.dtype),
        ));
    }
    if a.dims.len() != ndim {
        return Err(DatasetError::format(
            path,
            3,
            format!("{ndim} dimension(s), found {}", a.dims.len()),
        ));
    }
    Ok(())
}

/// Extracts labels at `base + i * stride + at` and checks each is `< classes`.
pub(crate) fn labels_to_u32(
    path: &Path,
    bytes: &[u8],
    base: u64,
    stride: usize,
    at: usize,
    classes: usize,
) -> Result<Vec<u32>, DatasetError> {
    let mut out = Vec::with_capacity(bytes.len() / stride.max(1));
    for (i, rec) in bytes.chunks_exact(stride).enumerate() {
        let l = rec[at];
        if usize::from(l) >= classes {
            return Err(DatasetError::format(
                PathBuf::from(path),
                base + (i * stride + at) as u64,
                format!("a label below {classes} (record {i}), found {l}"),
            ));
        }
        out.push(u32::from(l));
    }
    Ok(out)
}

/// Serializes a `u8` IDX file (used by tests and tools to make small data sets).
pub fn encode_idx_u8(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, 0x08, dims.len() as u8]);
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8], gz: bool) -> PathBuf {
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        if gz {
            let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap();
        } else {
            f.write_all(bytes).unwrap();
        }
        p
    }

    fn offset_of(e: DatasetError) -> (u64, String) {
        match e {
            DatasetError::Format {
                offset, expected, ..
            } => (offset, expected),
            other => panic!("expected a format error, got {other}"),
        }
    }

    #[test]
    fn roundtrip_raw_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
        let bytes = encode_idx_u8(&[3, 4, 5], &data);
        for gz in [false, true] {
            let p = write(dir.path(), if gz { "a.gz" } else { "a" }, &bytes, gz);
            let a = read_idx(&p).unwrap();
            assert_eq!(a.dtype, IdxType::U8);
            assert_eq!(a.dims, vec![3, 4, 5]);
            assert_eq!(a.data, data);
        }
    }

    #[test]
    fn truncated_and_trailing_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 2 * 3 * 3];
        let mut bytes = encode_idx_u8(&[2, 3, 3], &data);
        bytes.truncate(bytes.len() - 5);
        for gz in [false, true] {
            let p = write(dir.path(), "t", &bytes, gz);
            let e = read_idx(&p).unwrap_err();
            assert!(e.to_string().contains(&p.display().to_string()), "{e}");
            let (off, exp) = offset_of(e);
            assert_eq!(off, 16 + 18 - 5);
            assert!(exp.contains("18 data bytes"), "{exp}");
        }
        let mut bytes = encode_idx_u8(&[2, 3, 3], &data);
        bytes.extend_from_slice(&[1, 2, 3]);
        for gz in [false, true] {
            let p = write(dir.path(), "x", &bytes, gz);
            let (off, exp) = offset_of(read_idx(&p).unwrap_err());
            assert_eq!(off, 16 + 18);
            assert!(exp.contains("end of file"), "{exp}");
        }
    }

    #[test]
    fn bad_headers() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "m", &[1, 0, 8, 1, 0, 0, 0, 0], false);
        assert_eq!(offset_of(read_idx(&p).unwrap_err()).0, 0);
        let p = write(dir.path(), "t", &[0, 0, 0x42, 1, 0, 0, 0, 0], false);
        assert_eq!(offset_of(read_idx(&p).unwrap_err()).0, 2);
        let p = write(dir.path(), "z", &[0, 0, 8, 0], false);
        assert_eq!(offset_of(read_idx(&p).unwrap_err()).0, 3);
        let p = write(dir.path(), "d", &[0, 0, 8, 3, 0, 0, 0, 1, 0], false);
        assert_eq!(offset_of(read_idx(&p).unwrap_err()).0, 9);
        let p = write(dir.path(), "s", &[0, 0], false);
        assert_eq!(offset_of(read_idx(&p).unwrap_err()).0, 2);
        // Dimensions whose product overflows.
        let mut huge = vec![0, 0, 0x0E, 4];
        for _ in 0..4 {
            huge.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        let p = write(dir.path(), "h", &huge, false);
        assert_eq!(offset_of(read_idx(&p).unwrap_err()).0, 4);
        // Wider element types are size-checked with their element size.
        let mut f32s = vec![0, 0, 0x0D, 1, 0, 0, 0, 2];
        f32s.extend_from_slice(&[0; 8]);
        let p = write(dir.path(), "f", &f32s, false);
        let a = read_idx(&p).unwrap();
        assert_eq!((a.dtype, a.dims, a.data.len()), (IdxType::F32, vec![2], 8));
    }

    #[test]
    fn gzip_trailing_garbage_is_named_and_members_are_concatenated() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode_idx_u8(&[4, 2, 2], &[5u8; 16]);
        let p = write(dir.path(), "g.gz", &bytes, true);
        let good = std::fs::read(&p).unwrap();
        for garbage in [
            &b"\0"[..],
            b"\0\0\0\0\0\0\0\0",
            b"GARBAGE AFTER THE MEMBER, long enough",
        ] {
            let mut gz = good.clone();
            gz.extend_from_slice(garbage);
            std::fs::write(&p, &gz).unwrap();
            let e = read_idx(&p).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&p.display().to_string()), "{msg}");
            assert!(msg.contains("trailing garbage"), "{msg}");
            assert!(
                msg.contains(&format!("compressed byte {}", good.len()))
                    && msg.contains(&format!("{} byte(s)", garbage.len())),
                "{msg}"
            );
            assert!(!msg.contains("unexpected end of file"), "{msg}");
        }
        // Two members (e.g. `cat a.gz b.gz`) form one stream, as with gzip -d.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes[..10]).unwrap();
        let mut two = enc.finish().unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes[10..]).unwrap();
        two.extend(enc.finish().unwrap());
        std::fs::write(&p, &two).unwrap();
        assert_eq!(read_idx(&p).unwrap().data, vec![5u8; 16]);
    }

    #[test]
    fn corrupt_gzip_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode_idx_u8(&[100], &[3u8; 100]);
        let p = write(dir.path(), "c.gz", &bytes, true);
        let mut gz = std::fs::read(&p).unwrap();
        let n = gz.len();
        gz[n - 9] ^= 0xff; // corrupt the CRC32 trailer
        std::fs::write(&p, &gz).unwrap();
        let e = read_idx(&p).unwrap_err();
        assert!(matches!(e, DatasetError::Format { .. }), "{e}");
    }

    #[test]
    fn pair_checks_counts_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let imgs = write(dir.path(), "i", &encode_idx_u8(&[3, 2, 2], &[0; 12]), false);
        let labels = write(dir.path(), "l", &encode_idx_u8(&[3], &[0, 9, 4]), true);
        let p = read_idx_pair(&imgs, &labels, 10).unwrap();
        assert_eq!(
            (p.images.len(), p.labels, p.n, p.h, p.w),
            (12, vec![0, 9, 4], 3, 2, 2)
        );
        let (off, exp) = offset_of(read_idx_pair(&imgs, &labels, 5).unwrap_err());
        assert_eq!(off, 9);
        assert!(exp.contains("below 5"), "{exp}");
        let short = write(dir.path(), "l2", &encode_idx_u8(&[2], &[0, 1]), false);
        let e = read_idx_pair(&imgs, &short, 10).unwrap_err();
        assert!(matches!(e, DatasetError::Inconsistent { .. }), "{e}");
        // Swapped files: the label file is not 3-dimensional.
        let e = read_idx_pair(&labels, &imgs, 10).unwrap_err();
        assert_eq!(offset_of(e).0, 3);
    }
}
