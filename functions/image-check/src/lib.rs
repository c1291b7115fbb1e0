//! Which bytes the pipeline accepts as an image.
//!
//! Rekognition's `DetectLabels` takes JPEG and PNG only, and documents these fixed limits
//! (Amazon Rekognition Developer Guide, "Guidelines and quotas in Amazon Rekognition"):
//!
//! - an image stored in S3 is at most 15 MB;
//! - width and height are each at least 80 pixels;
//! - width and height are each at most 10,000 pixels for `DetectLabels`.
//!
//! [`check`] decodes the whole image with real decoders (`png`, `zune-jpeg`), so a header that
//! lies, a compressed stream that is not zlib, missing tables or scan data, and anything
//! appended after the image's end are all refused before anything is stored. [`REKOGNITION`]
//! adds a cap on the pixel count that Rekognition does not have: it bounds the memory and time
//! the decode may take in a 512 MB function.
//!
//! [`inspect`] reads only the first bytes of an object (what a ranged GET returns), for a
//! function that must not download whole objects: it names the format and, where the header
//! fits in those bytes, checks the dimensions.

use std::fmt;
use std::io::Cursor;

use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// An accepted image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

impl Format {
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
        }
    }

    /// The format a `content-type` value names, ignoring parameters and case.
    pub fn from_mime(s: &str) -> Option<Self> {
        let essence = s
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "image/jpeg" | "image/jpg" => Some(Format::Jpeg),
            "image/png" => Some(Format::Png),
            _ => None,
        }
    }

    /// The format the first bytes announce (its signature), if any.
    pub fn from_signature(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(PNG_SIGNATURE) {
            Some(Format::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else {
            None
        }
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Dimension limits an image must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_side: u32,
    pub max_side: u32,
    pub max_pixels: u64,
}

/// Rekognition's documented dimension limits, plus this project's pixel cap: 50 megapixels
/// (for example 10,000 × 5,000). Decoding to one byte per pixel then needs at most 50 MB.
pub const REKOGNITION: Limits = Limits {
    min_side: 80,
    max_side: 10_000,
    max_pixels: 50_000_000,
};

/// Rekognition reads images from S3 up to 15 MB.
pub const MAX_S3_BYTES: u64 = 15 * 1024 * 1024;

/// An image that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No JPEG or PNG signature.
    NotAnImage,
    /// The signature of an accepted format, but the decoder refused what follows.
    Corrupt { format: Format, detail: String },
    /// A side below the minimum.
    TooSmall { width: u32, height: u32, min: u32 },
    /// A side above the maximum.
    TooWide { width: u32, height: u32, max: u32 },
    /// More pixels than the cap.
    TooManyPixels { width: u32, height: u32, max: u64 },
    /// Bytes after the image's end (an appended file, a polyglot).
    TrailingData { format: Format, bytes: usize },
}

impl Rejection {
    /// A stable, machine-readable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::NotAnImage => "unsupported_media_type",
            Rejection::Corrupt { .. } => "invalid_image",
            Rejection::TooSmall { .. } => "image_too_small",
            Rejection::TooWide { .. } | Rejection::TooManyPixels { .. } => {
                "image_dimensions_too_large"
            }
            Rejection::TrailingData { .. } => "trailing_data",
        }
    }

    /// The HTTP status a client gets: 415 for a type we do not take, 400 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::NotAnImage => 415,
            _ => 400,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotAnImage => f.write_str("the bytes are not a JPEG or PNG image"),
            Rejection::Corrupt { format, detail } => write!(
                f,
                "the bytes start like {} but do not decode: {detail}",
                format.mime()
            ),
            Rejection::TooSmall { width, height, min } => write!(
                f,
                "the image is {width}x{height} pixels; each side must be at least {min}"
            ),
            Rejection::TooWide { width, height, max } => write!(
                f,
                "the image is {width}x{height} pixels; each side must be at most {max}"
            ),
            Rejection::TooManyPixels { width, height, max } => write!(
                f,
                "the image is {width}x{height} pixels; at most {max} pixels are accepted"
            ),
            Rejection::TrailingData { format, bytes } => write!(
                f,
                "{bytes} bytes follow the end of the {} image; send the image alone",
                format.mime()
            ),
        }
    }
}

impl std::error::Error for Rejection {}

impl Limits {
    fn check(&self, format: Format, width: u32, height: u32) -> Result<Image, Rejection> {
        if width < self.min_side || height < self.min_side {
            return Err(Rejection::TooSmall {
                width,
                height,
                min: self.min_side,
            });
        }
        if width > self.max_side || height > self.max_side {
            return Err(Rejection::TooWide {
                width,
                height,
                max: self.max_side,
            });
        }
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return Err(Rejection::TooManyPixels {
                width,
                height,
                max: self.max_pixels,
            });
        }
        Ok(Image {
            format,
            width,
            height,
        })
    }
}

/// Decodes the whole image: accepted only if it is a JPEG or PNG within `limits` that decodes
/// completely and ends where the bytes end.
pub fn check(bytes: &[u8], limits: &Limits) -> Result<Image, Rejection> {
    match Format::from_signature(bytes) {
        Some(Format::Png) => png_check(bytes, limits),
        Some(Format::Jpeg) => jpeg_check(bytes, limits),
        None => Err(Rejection::NotAnImage),
    }
}

/// What the first bytes of an object say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    pub format: Format,
    /// The checked dimensions, when the header lies within the bytes read.
    pub image: Option<Image>,
}

/// Reads only `prefix`, the first bytes of an object of `total` bytes. When the prefix is the
/// whole object this is [`check`]; otherwise the signature decides the format and the header,
/// if it fits in the prefix, the dimensions.
pub fn inspect(prefix: &[u8], total: u64, limits: &Limits) -> Result<Inspected, Rejection> {
    let format = Format::from_signature(prefix).ok_or(Rejection::NotAnImage)?;
    if prefix.len() as u64 >= total {
        let image = check(prefix, limits)?;
        return Ok(Inspected {
            format,
            image: Some(image),
        });
    }
    // A header that does not decode from a prefix may simply be cut short: only dimensions
    // that were read are held against the image.
    let size = match format {
        Format::Png => png_header(prefix).ok(),
        Format::Jpeg => jpeg_header(prefix).ok(),
    };
    let image = match size {
        Some((w, h)) => Some(limits.check(format, w, h)?),
        None => None,
    };
    Ok(Inspected { format, image })
}

fn corrupt(format: Format, detail: impl fmt::Display) -> Rejection {
    Rejection::Corrupt {
        format,
        detail: detail.to_string(),
    }
}

/// The PNG decoder's own allocation budget (row buffers, ancillary chunks).
const PNG_DECODER_BYTES: usize = 16 * 1024 * 1024;

fn png_decoder<'c, 'b>(cursor: &'c mut Cursor<&'b [u8]>) -> png::Decoder<&'c mut Cursor<&'b [u8]>> {
    let mut options = png::DecodeOptions::default();
    options.set_ignore_adler32(false);
    options.set_ignore_crc(false);
    options.set_skip_ancillary_crc_failures(false);
    let mut decoder = png::Decoder::new_with_options(cursor, options);
    decoder.set_limits(png::Limits {
        bytes: PNG_DECODER_BYTES,
    });
    decoder
}

fn png_header(bytes: &[u8]) -> Result<(u32, u32), Rejection> {
    let mut cursor = Cursor::new(bytes);
    let reader = png_decoder(&mut cursor)
        .read_info()
        .map_err(|e| corrupt(Format::Png, e))?;
    let info = reader.info();
    Ok((info.width, info.height))
}

fn png_check(bytes: &[u8], limits: &Limits) -> Result<Image, Rejection> {
    let mut cursor = Cursor::new(bytes);
    let image = {
        let mut reader = png_decoder(&mut cursor)
            .read_info()
            .map_err(|e| corrupt(Format::Png, e))?;
        let info = reader.info();
        let image = limits.check(Format::Png, info.width, info.height)?;
        // Row by row: memory stays at one row whatever the image's size.
        while reader
            .next_row()
            .map_err(|e| corrupt(Format::Png, e))?
            .is_some()
        {}
        reader.finish().map_err(|e| corrupt(Format::Png, e))?;
        image
    };
    // The decoder consumes exactly the bytes it parsed, up to the end of IEND.
    let end = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    trailing(Format::Png, bytes, end)?;
    Ok(image)
}

/// A JPEG decoder that reads headers of any size (a JPEG side is at most 65,535, so an
/// oversized image is named by [`Limits`] rather than failing as a decoder error) and decodes
/// to one byte per pixel, which is enough to prove the data decodes.
fn jpeg_decoder(bytes: &[u8]) -> JpegDecoder<Cursor<&[u8]>> {
    let side = usize::from(u16::MAX);
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(side)
        .set_max_height(side)
        .jpeg_set_out_colorspace(ColorSpace::Luma);
    JpegDecoder::new_with_options(Cursor::new(bytes), options)
}

/// Reads the headers: the frame's size.
fn jpeg_headers(decoder: &mut JpegDecoder<Cursor<&[u8]>>) -> Result<(u32, u32), Rejection> {
    decoder
        .decode_headers()
        .map_err(|e| corrupt(Format::Jpeg, e))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| corrupt(Format::Jpeg, "no frame header"))?;
    let side =
        |v: usize| u32::try_from(v).map_err(|_| corrupt(Format::Jpeg, "frame size out of range"));
    Ok((side(w)?, side(h)?))
}

fn jpeg_header(bytes: &[u8]) -> Result<(u32, u32), Rejection> {
    jpeg_headers(&mut jpeg_decoder(bytes))
}

fn jpeg_check(bytes: &[u8], limits: &Limits) -> Result<Image, Rejection> {
    let mut decoder = jpeg_decoder(bytes);
    let (width, height) = jpeg_headers(&mut decoder)?;
    // Within the limits before any pixel memory is allocated.
    let image = limits.check(Format::Jpeg, width, height)?;
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| corrupt(Format::Jpeg, "no frame header"))?;
    let mut pixels = vec![0u8; size];
    decoder
        .decode_into(&mut pixels)
        .map_err(|e| corrupt(Format::Jpeg, e))?;
    let end = jpeg_end(bytes).map_err(|why| corrupt(Format::Jpeg, why))?;
    trailing(Format::Jpeg, bytes, end)?;
    Ok(image)
}

fn trailing(format: Format, bytes: &[u8], end: usize) -> Result<(), Rejection> {
    match bytes.len().checked_sub(end) {
        Some(0) | None => Ok(()),
        Some(extra) => Err(Rejection::TrailingData {
            format,
            bytes: extra,
        }),
    }
}

/// Where a JPEG's end-of-image marker ends. The decoder tells us the data is sound but not
/// where it stopped reading (and it fills a scan with no data with zeros), so this follows the
/// marker structure: segments carry their length, and entropy-coded data can hold `FF` only
/// as `FF 00` (a stuffed byte) or `FF D0`–`FF D7` (restart markers), so the first other
/// marker after a scan is a real one.
fn jpeg_end(b: &[u8]) -> Result<usize, &'static str> {
    const CUT: &str = "the data ends before the end-of-image marker";
    let at = |i: usize| b.get(i).copied().ok_or(CUT);
    let mut i = 2; // after SOI
    loop {
        // Between segments: one marker, possibly preceded by fill bytes.
        if at(i)? != 0xFF {
            return Err("expected a marker");
        }
        while at(i)? == 0xFF {
            i += 1;
        }
        let marker = at(i)?;
        i += 1;
        match marker {
            0xD9 => return Ok(i),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([at(i)?, at(i + 1)?]));
        if len < 2 {
            return Err("a segment length is below 2");
        }
        i = i.checked_add(len).ok_or(CUT)?;
        if marker == 0xDA {
            // Entropy-coded data up to the next marker that is not stuffing or a restart.
            let start = i;
            loop {
                if at(i)? != 0xFF {
                    i += 1;
                    continue;
                }
                match at(i + 1)? {
                    0x00 | 0xD0..=0xD7 => i += 2,
                    0xFF => i += 1,
                    _ => break,
                }
            }
            if i == start {
                return Err("a scan has no data");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_parsing() {
        assert_eq!(
            Format::from_mime("image/JPEG; charset=x"),
            Some(Format::Jpeg)
        );
        assert_eq!(Format::from_mime("image/png"), Some(Format::Png));
        assert_eq!(Format::from_mime("image/gif"), None);
        assert_eq!(Format::from_mime(""), None);
    }

    #[test]
    fn limits_name_the_side_or_the_count() {
        let l = Limits {
            min_side: 80,
            max_side: 1000,
            max_pixels: 500_000,
        };
        assert!(matches!(
            l.check(Format::Png, 79, 500),
            Err(Rejection::TooSmall { min: 80, .. })
        ));
        assert!(matches!(
            l.check(Format::Png, 1001, 100),
            Err(Rejection::TooWide { max: 1000, .. })
        ));
        assert!(matches!(
            l.check(Format::Png, 1000, 1000),
            Err(Rejection::TooManyPixels { .. })
        ));
        assert_eq!(
            l.check(Format::Png, 80, 80),
            Ok(Image {
                format: Format::Png,
                width: 80,
                height: 80
            })
        );
    }

    #[test]
    fn jpeg_end_skips_stuffing_and_restarts() {
        // SOI, a 4-byte APP0, SOS (len 3), data with FF00 and FFD3, then EOI.
        let b = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12,
            0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xD9,
        ];
        assert_eq!(jpeg_end(&b), Ok(b.len()));
        let mut longer = b.to_vec();
        longer.extend_from_slice(b"PK\x03\x04");
        assert_eq!(jpeg_end(&longer), Ok(b.len()));
        assert!(jpeg_end(&b[..b.len() - 1]).is_err());
        let empty_scan = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0xFF, 0xD9];
        assert_eq!(jpeg_end(&empty_scan), Err("a scan has no data"));
    }
}
