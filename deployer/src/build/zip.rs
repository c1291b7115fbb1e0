//! Deterministic Lambda zips: exactly one entry, `bootstrap`, mode 0755, a fixed timestamp and
//! no extra fields, so the same binary always gives the same zip bytes and the same hash.
//! Also a reader, used to verify every archive before it is accepted.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use thiserror::Error;

/// The one entry a `provided.al2023` function needs.
pub const ENTRY: &str = "bootstrap";
/// `-rwxr-xr-x`, as a regular file.
pub const MODE: u32 = 0o100_755;
/// MS-DOS date of 1980-01-01, the earliest a zip can say, time 00:00:00.
pub const DOS_DATE: u16 = (1 << 5) | 1;
pub const DOS_TIME: u16 = 0;

const LOCAL: u32 = 0x0403_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const END: u32 = 0x0605_4b50;
const DEFLATE: u16 = 8;
const VERSION_NEEDED: u16 = 20;
/// Upper byte 3: attributes are Unix mode bits.
const VERSION_MADE_BY: u16 = (3 << 8) | 20;

#[derive(Debug, Error)]
pub enum ZipError {
    #[error("cannot compress: {0}")]
    Compress(#[from] std::io::Error),
    #[error("file is larger than a zip without zip64 can hold")]
    TooLarge,
    #[error("not a valid single-entry zip: {0}")]
    Invalid(&'static str),
}

/// How hard to compress. Either gives the same bytes for the same binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// Deflate level 9: what Lambda artifacts get (smaller uploads, quicker cold starts).
    Best,
    /// Deflate level 1: for the local environment's large unoptimised binaries, where level 9
    /// took about 7 s per 50 MB binary against under 1 s, for a zip about 14 % larger.
    Fast,
}

/// Zips `binary` as the single entry `bootstrap`.
pub fn bootstrap_zip(binary: &[u8], effort: Effort) -> Result<Vec<u8>, ZipError> {
    let level = match effort {
        Effort::Best => Compression::best(),
        Effort::Fast => Compression::fast(),
    };
    let mut enc = DeflateEncoder::new(Vec::new(), level);
    enc.write_all(binary)?;
    let compressed = enc.finish()?;
    let size = u32::try_from(binary.len()).map_err(|_| ZipError::TooLarge)?;
    let csize = u32::try_from(compressed.len()).map_err(|_| ZipError::TooLarge)?;
    let name = ENTRY.as_bytes();
    let entry = Sizes {
        crc: crc32(binary),
        csize,
        size,
        name_len: name.len() as u16,
    };

    let mut out = Vec::with_capacity(compressed.len() + 128);
    put32(&mut out, LOCAL);
    put16(&mut out, VERSION_NEEDED);
    put16(&mut out, 0); // flags: sizes are in this header, no data descriptor
    put_entry(&mut out, &entry);
    put16(&mut out, 0); // no extra field (no timestamps, no uid/gid)
    out.extend_from_slice(name);
    out.extend_from_slice(&compressed);

    let central_at = u32::try_from(out.len()).map_err(|_| ZipError::TooLarge)?;
    put32(&mut out, CENTRAL);
    put16(&mut out, VERSION_MADE_BY);
    put16(&mut out, VERSION_NEEDED);
    put16(&mut out, 0);
    put_entry(&mut out, &entry);
    put16(&mut out, 0); // extra
    put16(&mut out, 0); // comment
    put16(&mut out, 0); // disk
    put16(&mut out, 0); // internal attributes
    put32(&mut out, MODE << 16);
    put32(&mut out, 0); // local header offset
    out.extend_from_slice(name);
    let central_len = u32::try_from(out.len()).map_err(|_| ZipError::TooLarge)? - central_at;

    put32(&mut out, END);
    put16(&mut out, 0);
    put16(&mut out, 0);
    put16(&mut out, 1);
    put16(&mut out, 1);
    put32(&mut out, central_len);
    put32(&mut out, central_at);
    put16(&mut out, 0);
    Ok(out)
}

/// What the local header and the central directory both say of the entry, in the same order.
struct Sizes {
    crc: u32,
    csize: u32,
    size: u32,
    name_len: u16,
}

/// The fields the two headers share: method, time and date, CRC, sizes and the name's length.
fn put_entry(out: &mut Vec<u8>, e: &Sizes) {
    put16(out, DEFLATE);
    put16(out, DOS_TIME);
    put16(out, DOS_DATE);
    put32(out, e.crc);
    put32(out, e.csize);
    put32(out, e.size);
    put16(out, e.name_len);
}

/// One entry as the central directory and local header describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub dos_time: u16,
    pub dos_date: u16,
    pub data: Vec<u8>,
}

/// Reads a zip written by any tool, requiring exactly one entry, and returns it decompressed
/// with its CRC verified.
pub fn read_single(zip: &[u8]) -> Result<Entry, ZipError> {
    let bad = ZipError::Invalid;
    let eocd = zip
        .len()
        .checked_sub(22)
        .filter(|&at| get32(zip, at) == Some(END))
        .ok_or(bad("no end-of-central-directory record (or a zip comment)"))?;
    if get16(zip, eocd + 10) != Some(1) {
        return Err(bad("the archive must hold exactly one entry"));
    }
    let cd = get32(zip, eocd + 16).ok_or(bad("truncated"))? as usize;
    if get32(zip, cd) != Some(CENTRAL) {
        return Err(bad("central directory not found"));
    }
    let method = get16(zip, cd + 10).ok_or(bad("truncated"))?;
    let dos_time = get16(zip, cd + 12).ok_or(bad("truncated"))?;
    let dos_date = get16(zip, cd + 14).ok_or(bad("truncated"))?;
    let crc = get32(zip, cd + 16).ok_or(bad("truncated"))?;
    let csize = get32(zip, cd + 20).ok_or(bad("truncated"))? as usize;
    let size = get32(zip, cd + 24).ok_or(bad("truncated"))? as usize;
    let name_len = usize::from(get16(zip, cd + 28).ok_or(bad("truncated"))?);
    let attrs = get32(zip, cd + 38).ok_or(bad("truncated"))?;
    let local = get32(zip, cd + 42).ok_or(bad("truncated"))? as usize;
    let name = zip
        .get(cd + 46..cd + 46 + name_len)
        .ok_or(bad("truncated"))?;
    if get32(zip, local) != Some(LOCAL) {
        return Err(bad("local header not found"));
    }
    let lname = usize::from(get16(zip, local + 26).ok_or(bad("truncated"))?);
    let lextra = usize::from(get16(zip, local + 28).ok_or(bad("truncated"))?);
    let start = local + 30 + lname + lextra;
    let stored = zip
        .get(start..start + csize)
        .ok_or(bad("entry data out of bounds"))?;
    let data = match method {
        0 => stored.to_vec(),
        DEFLATE => {
            let mut out = Vec::with_capacity(size);
            DeflateDecoder::new(stored)
                .read_to_end(&mut out)
                .map_err(|_| bad("entry does not inflate"))?;
            out
        }
        _ => return Err(bad("unsupported compression method")),
    };
    if data.len() != size || crc32(&data) != crc {
        return Err(bad("entry size or CRC does not match"));
    }
    Ok(Entry {
        name: String::from_utf8_lossy(name).into_owned(),
        mode: attrs >> 16,
        dos_time,
        dos_date,
        data,
    })
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn get32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The CRC-32 of every byte value, for one table step per byte instead of eight bit steps.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

/// CRC-32 (ISO-HDLC, as ZIP and PNG use it).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn one_executable_entry_with_a_fixed_timestamp() {
        let bin = sample();
        let zip = bootstrap_zip(&bin, Effort::Best).unwrap();
        let e = read_single(&zip).unwrap();
        assert_eq!(e.name, "bootstrap");
        assert_eq!(e.mode, 0o100_755);
        assert_eq!((e.dos_date, e.dos_time), (0x21, 0));
        assert_eq!(e.data, bin);
    }

    #[test]
    fn same_input_same_bytes() {
        let bin = sample();
        assert_eq!(
            bootstrap_zip(&bin, Effort::Best).unwrap(),
            bootstrap_zip(&bin, Effort::Best).unwrap()
        );
        let mut other = bin.clone();
        other[10] ^= 1;
        assert_ne!(
            bootstrap_zip(&bin, Effort::Best).unwrap(),
            bootstrap_zip(&other, Effort::Best).unwrap()
        );
    }

    #[test]
    fn both_efforts_are_deterministic_and_round_trip() {
        let mut bin = sample();
        bin.extend(b"a compressible stretch ".repeat(5_000));
        let fast = bootstrap_zip(&bin, Effort::Fast).unwrap();
        assert_eq!(fast, bootstrap_zip(&bin, Effort::Fast).unwrap());
        assert_ne!(fast, bootstrap_zip(&bin, Effort::Best).unwrap());
        for zip in [fast, bootstrap_zip(&bin, Effort::Best).unwrap()] {
            let entry = read_single(&zip).unwrap();
            assert_eq!(entry.data, bin);
            assert_eq!(entry.name, ENTRY);
        }
    }

    #[test]
    fn crc_is_the_zip_crc() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn the_reader_rejects_damage() {
        let zip = bootstrap_zip(&sample(), Effort::Best).unwrap();
        let mut flipped = zip.clone();
        flipped[60] ^= 0xFF;
        assert!(read_single(&flipped).is_err());
        assert!(read_single(&zip[..zip.len() - 1]).is_err());
        assert!(read_single(b"PK").is_err());
    }
}
