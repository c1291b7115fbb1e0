//! Image type detection from the bytes themselves, never from a client's `content-type`.
//! Accepts what Rekognition accepts (JPEG, PNG) and walks the container structure far enough
//! that a valid signature followed by garbage is refused before anything is stored.

/// An accepted image type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    Jpeg,
    Png,
}

impl ImageType {
    pub fn mime(self) -> &'static str {
        match self {
            ImageType::Jpeg => "image/jpeg",
            ImageType::Png => "image/png",
        }
    }

    pub fn from_mime(s: &str) -> Option<Self> {
        let essence = s
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "image/jpeg" | "image/jpg" => Some(ImageType::Jpeg),
            "image/png" => Some(ImageType::Png),
            _ => None,
        }
    }
}

/// What the bytes turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A structurally valid image of an accepted type.
    Image {
        kind: ImageType,
        width: u32,
        height: u32,
    },
    /// Starts like an accepted type but is truncated or corrupt.
    Corrupt(ImageType, &'static str),
    /// Not an accepted type at all.
    Unsupported,
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

pub fn sniff(bytes: &[u8]) -> Sniffed {
    if bytes.starts_with(PNG_SIGNATURE) {
        return match png(bytes) {
            Ok((width, height)) => Sniffed::Image {
                kind: ImageType::Png,
                width,
                height,
            },
            Err(why) => Sniffed::Corrupt(ImageType::Png, why),
        };
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return match jpeg(bytes) {
            Ok((width, height)) => Sniffed::Image {
                kind: ImageType::Jpeg,
                width,
                height,
            },
            Err(why) => Sniffed::Corrupt(ImageType::Jpeg, why),
        };
    }
    Sniffed::Unsupported
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Walks JPEG marker segments up to the start of scan, requiring a frame header with a
/// non-zero size, then an end-of-image marker after the entropy-coded data.
fn jpeg(b: &[u8]) -> Result<(u32, u32), &'static str> {
    let mut i = 2;
    let mut size = None;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        if b.get(i) != Some(&0xFF) {
            return Err("expected a JPEG marker");
        }
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *b.get(i).ok_or("truncated JPEG")?;
        i += 1;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xD9 => return Err("JPEG ends before any image data"),
            _ => {}
        }
        let len = usize::from(be16(b, i).ok_or("truncated JPEG segment")?);
        if len < 2 || i + len > b.len() {
            return Err("JPEG segment length out of bounds");
        }
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame {
            let h = be16(b, i + 3).ok_or("truncated JPEG frame header")?;
            let w = be16(b, i + 5).ok_or("truncated JPEG frame header")?;
            if w == 0 || h == 0 {
                return Err("JPEG frame has no pixels");
            }
            size = Some((u32::from(w), u32::from(h)));
        }
        i += len;
        if marker == 0xDA {
            break;
        }
    }
    let size = size.ok_or("JPEG has no frame header")?;
    // The scan data ends at EOI; encoders may pad after it, so look for the last one.
    let tail = &b[i..];
    let has_eoi = tail.windows(2).any(|w| w == [0xFF, 0xD9]);
    if !has_eoi {
        return Err("JPEG has no end-of-image marker");
    }
    Ok(size)
}

/// Walks PNG chunks, checking each CRC, requiring IHDR first, image data, and IEND.
fn png(b: &[u8]) -> Result<(u32, u32), &'static str> {
    let mut i = PNG_SIGNATURE.len();
    let mut size = None;
    let mut saw_idat = false;
    loop {
        let len = be32(b, i).ok_or("truncated PNG chunk")? as usize;
        let start = i + 4;
        let data_end = start
            .checked_add(4)
            .and_then(|s| s.checked_add(len))
            .ok_or("PNG chunk length out of bounds")?;
        if data_end + 4 > b.len() {
            return Err("PNG chunk length out of bounds");
        }
        let kind = &b[start..start + 4];
        let crc = be32(b, data_end).ok_or("truncated PNG chunk")?;
        if crc32(&b[start..data_end]) != crc {
            return Err("PNG chunk checksum mismatch");
        }
        if size.is_none() {
            if kind != b"IHDR" || len != 13 {
                return Err("PNG does not start with an image header");
            }
            let w = be32(b, start + 4).ok_or("truncated PNG header")?;
            let h = be32(b, start + 8).ok_or("truncated PNG header")?;
            if w == 0 || h == 0 {
                return Err("PNG has no pixels");
            }
            size = Some((w, h));
        }
        match kind {
            b"IDAT" => saw_idat = true,
            b"IEND" => {
                return if saw_idat {
                    size.ok_or("PNG has no image header")
                } else {
                    Err("PNG has no image data")
                };
            }
            _ => {}
        }
        i = data_end + 4;
    }
}

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

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_png_spec_example() {
        // CRC of "IEND" with no data is the well-known AE426082.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn mime_parsing() {
        assert_eq!(
            ImageType::from_mime("image/JPEG; charset=x"),
            Some(ImageType::Jpeg)
        );
        assert_eq!(ImageType::from_mime("image/png"), Some(ImageType::Png));
        assert_eq!(ImageType::from_mime("image/gif"), None);
        assert_eq!(ImageType::from_mime(""), None);
    }
}
