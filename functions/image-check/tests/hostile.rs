//! Hostile and broken images, each with the exact verdict it must get, plus property tests:
//! random and mutated bytes never panic and never pass unless they decode.

use image_check::{Format, Image, Limits, REKOGNITION, Rejection, check, inspect};
use proptest::prelude::*;

const CAT: &[u8] = include_bytes!("../../../fixtures/images/chelsea.png");
const ROCKET: &[u8] = include_bytes!("../../../fixtures/images/rocket.jpg");

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out
}

fn ihdr(w: u32, h: u32, depth: u8, colour: u8) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&w.to_be_bytes());
    d.extend_from_slice(&h.to_be_bytes());
    d.extend_from_slice(&[depth, colour, 0, 0, 0]);
    chunk(b"IHDR", &d)
}

/// A PNG from raw chunks.
fn png_of(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for c in chunks {
        out.extend_from_slice(c);
    }
    out
}

/// A real grey PNG made by the `png` encoder.
fn grey_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().unwrap_or_else(|e| panic!("header: {e}"));
        let data: Vec<u8> = (0..w * h).map(|i| (i % 251) as u8).collect();
        writer
            .write_image_data(&data)
            .unwrap_or_else(|e| panic!("data: {e}"));
    }
    out
}

/// The chunks of a PNG, as (kind, whole chunk bytes).
fn png_chunks(b: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let mut i = 8;
    let mut out = Vec::new();
    while i + 12 <= b.len() {
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let kind = [b[i + 4], b[i + 5], b[i + 6], b[i + 7]];
        out.push((kind, b[i..i + 12 + len].to_vec()));
        i += 12 + len;
    }
    out
}

/// The segments of a JPEG up to and including SOS, then the rest (scan data and EOI).
fn jpeg_segments(b: &[u8]) -> (Vec<(u8, Vec<u8>)>, Vec<u8>) {
    let mut i = 2;
    let mut segs = Vec::new();
    loop {
        assert_eq!(b[i], 0xFF);
        let marker = b[i + 1];
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        segs.push((marker, b[i..i + 2 + len].to_vec()));
        i += 2 + len;
        if marker == 0xDA {
            return (segs, b[i..].to_vec());
        }
    }
}

fn jpeg_without(marker: u8) -> Vec<u8> {
    let (segs, rest) = jpeg_segments(ROCKET);
    assert!(
        segs.iter().any(|(m, _)| *m == marker),
        "fixture has {marker:X}"
    );
    let mut out = vec![0xFF, 0xD8];
    for (m, s) in segs {
        if m != marker {
            out.extend_from_slice(&s);
        }
    }
    out.extend_from_slice(&rest);
    out
}

fn jpeg_with_frame(edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let (segs, rest) = jpeg_segments(ROCKET);
    let mut out = vec![0xFF, 0xD8];
    for (m, mut s) in segs {
        if matches!(m, 0xC0..=0xC2) {
            edit(&mut s);
        }
        out.extend_from_slice(&s);
    }
    out.extend_from_slice(&rest);
    out
}

fn code(bytes: &[u8]) -> &'static str {
    match check(bytes, &REKOGNITION) {
        Ok(_) => "ok",
        Err(r) => r.code(),
    }
}

fn with(base: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    v.extend_from_slice(tail);
    v
}

#[test]
fn the_photographs_pass() {
    for (name, bytes, format, w, h) in [
        ("chelsea.png", CAT, Format::Png, 451, 300),
        (
            "astronaut.png",
            &include_bytes!("../../../fixtures/images/astronaut.png")[..],
            Format::Png,
            512,
            512,
        ),
        (
            "coffee.png",
            &include_bytes!("../../../fixtures/images/coffee.png")[..],
            Format::Png,
            600,
            400,
        ),
    ] {
        assert_eq!(
            check(bytes, &REKOGNITION),
            Ok(Image {
                format,
                width: w,
                height: h
            }),
            "{name}"
        );
    }
    let rocket = check(ROCKET, &REKOGNITION).unwrap_or_else(|e| panic!("rocket.jpg: {e}"));
    assert_eq!(rocket.format, Format::Jpeg);
}

/// A hostile file, what it is, and the code the check must answer.
type Case = (&'static str, Vec<u8>, &'static str);

/// The parts of a good PNG that the PNG cases rebuild: the image, its IDAT and an IEND.
struct Png {
    good: Vec<u8>,
    idat: Vec<u8>,
    iend: Vec<u8>,
}

impl Png {
    fn new() -> Self {
        let good = grey_png(100, 100);
        let idat = png_chunks(&good)
            .iter()
            .filter(|(k, _)| k == b"IDAT")
            .flat_map(|(_, c)| c.clone())
            .collect();
        Self {
            good,
            idat,
            iend: chunk(b"IEND", &[]),
        }
    }
}

/// Other formats, and images followed by other images or markup.
fn format_cases(p: &Png) -> Vec<Case> {
    let good = &p.good;
    vec![
        ("a small real PNG", good.clone(), "ok"),
        ("empty body", vec![], "unsupported_media_type"),
        ("text", b"hello, world".to_vec(), "unsupported_media_type"),
        (
            "GIF",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            "unsupported_media_type",
        ),
        (
            "WebP",
            b"RIFF\x1a\x00\x00\x00WEBPVP8 ".to_vec(),
            "unsupported_media_type",
        ),
    ]
}

/// PNGs whose structure is broken: chunks, compressed data, impossible headers.
fn png_structure_cases(p: &Png) -> Vec<Case> {
    let (idat, iend) = (&p.idat, &p.iend);
    vec![
        (
            "PNG signature only",
            b"\x89PNG\r\n\x1a\n".to_vec(),
            "invalid_image",
        ),
        (
            "PNG with an empty IDAT",
            png_of(&[ihdr(100, 100, 8, 0), chunk(b"IDAT", &[]), iend.clone()]),
            "invalid_image",
        ),
        (
            "PNG whose IDAT is not zlib",
            png_of(&[
                ihdr(100, 100, 8, 0),
                chunk(b"IDAT", &[0x55; 64]),
                iend.clone(),
            ]),
            "invalid_image",
        ),
        (
            "PNG with no IDAT",
            png_of(&[ihdr(100, 100, 8, 0), iend.clone()]),
            "invalid_image",
        ),
        (
            "PNG with too little image data",
            png_of(&[ihdr(100, 200, 8, 0), idat.clone(), iend.clone()]),
            "invalid_image",
        ),
        (
            "PNG: RGB at 4 bits, a combination that cannot exist",
            png_of(&[ihdr(100, 100, 4, 2), idat.clone(), iend.clone()]),
            "invalid_image",
        ),
        (
            "PNG: palette at 16 bits",
            png_of(&[ihdr(100, 100, 16, 3), idat.clone(), iend.clone()]),
            "invalid_image",
        ),
        (
            "PNG: colour type 5",
            png_of(&[ihdr(100, 100, 8, 5), idat.clone(), iend.clone()]),
            "invalid_image",
        ),
        (
            "PNG: grey at 3 bits",
            png_of(&[ihdr(100, 100, 3, 0), idat.clone(), iend.clone()]),
            "invalid_image",
        ),
    ]
}

/// PNGs of the wrong size, cut short, or with something after their end.
fn png_size_and_tail_cases(p: &Png) -> Vec<Case> {
    let (good, idat, iend) = (&p.good, &p.idat, &p.iend);
    vec![
        (
            "PNG header of 65535x65535",
            png_of(&[ihdr(65535, 65535, 8, 0), idat.clone(), iend.clone()]),
            "image_dimensions_too_large",
        ),
        (
            "PNG header of 1x100000",
            png_of(&[ihdr(1, 100_000, 8, 0), idat.clone(), iend.clone()]),
            "image_too_small",
        ),
        (
            "PNG header of 10000x10000",
            png_of(&[ihdr(10_000, 10_000, 8, 0), idat.clone(), iend.clone()]),
            "image_dimensions_too_large",
        ),
        ("PNG of 79x100", grey_png(79, 100), "image_too_small"),
        ("PNG of 80x80", grey_png(80, 80), "ok"),
        (
            "PNG with width 0",
            png_of(&[ihdr(0, 100, 8, 0), idat.clone(), iend.clone()]),
            "invalid_image",
        ),
        (
            "PNG whose first chunk is not IHDR",
            png_of(&[idat.clone(), ihdr(100, 100, 8, 0), iend.clone()]),
            "invalid_image",
        ),
        (
            "PNG cut in its IDAT",
            good[..good.len() - 30].to_vec(),
            "invalid_image",
        ),
        (
            "PNG without IEND",
            good[..good.len() - 12].to_vec(),
            "invalid_image",
        ),
        (
            "PNG with a bad chunk checksum",
            {
                let mut b = good.clone();
                let at = b.len() - 13; // last byte of the last IDAT's CRC
                b[at] ^= 0xFF;
                b
            },
            "invalid_image",
        ),
        (
            "PNG with a ZIP appended",
            with(good, b"PK\x03\x04zip"),
            "trailing_data",
        ),
        (
            "PNG with one byte appended",
            with(good, b"\0"),
            "trailing_data",
        ),
        (
            "PNG followed by a second PNG",
            with(good, good),
            "trailing_data",
        ),
    ]
}

/// JPEGs missing what a decoder needs, with impossible frames, cut short or with a tail;
/// and a JPEG and a PNG one after the other.
fn jpeg_cases(p: &Png) -> Vec<Case> {
    let good = &p.good;
    vec![
        ("JPEG SOI only", vec![0xFF, 0xD8, 0xFF], "invalid_image"),
        (
            "JPEG SOI and EOI",
            vec![0xFF, 0xD8, 0xFF, 0xD9],
            "invalid_image",
        ),
        (
            "JPEG with no quantization tables",
            jpeg_without(0xDB),
            "invalid_image",
        ),
        (
            "JPEG with no Huffman tables",
            jpeg_without(0xC4),
            "invalid_image",
        ),
        (
            "JPEG with no scan data",
            {
                let (segs, _) = jpeg_segments(ROCKET);
                let mut out = vec![0xFF, 0xD8];
                for (_, s) in segs {
                    out.extend_from_slice(&s);
                }
                out.extend_from_slice(&[0xFF, 0xD9]);
                out
            },
            "invalid_image",
        ),
        (
            "JPEG with no frame header",
            jpeg_without(0xC0),
            "invalid_image",
        ),
        (
            "JPEG frame header whose length field is too short",
            jpeg_with_frame(|s| {
                s[2] = 0;
                s[3] = 5;
            }),
            "invalid_image",
        ),
        (
            "JPEG frame of 0x0",
            jpeg_with_frame(|s| {
                s[5..9].copy_from_slice(&[0, 0, 0, 0]);
            }),
            "invalid_image",
        ),
        (
            "JPEG frame claiming 65535x65535",
            jpeg_with_frame(|s| {
                s[5..9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
            }),
            "image_dimensions_too_large",
        ),
        (
            "JPEG frame claiming 60x60",
            jpeg_with_frame(|s| {
                s[5..9].copy_from_slice(&[0, 60, 0, 60]);
            }),
            "image_too_small",
        ),
        (
            "JPEG cut in half",
            ROCKET[..ROCKET.len() / 2].to_vec(),
            "invalid_image",
        ),
        (
            "JPEG without its end-of-image marker",
            ROCKET[..ROCKET.len() - 2].to_vec(),
            "invalid_image",
        ),
        (
            "JPEG with a ZIP appended",
            with(ROCKET, b"PK\x03\x04zip"),
            "trailing_data",
        ),
        (
            "JPEG with HTML appended",
            with(ROCKET, b"<script>alert(1)</script>"),
            "trailing_data",
        ),
        (
            "JPEG followed by a PNG",
            with(ROCKET, good),
            "trailing_data",
        ),
        (
            "PNG followed by a JPEG",
            with(good, ROCKET),
            "trailing_data",
        ),
    ]
}

#[test]
fn hostile_images_get_their_exact_verdict() {
    let p = Png::new();
    let cases = [
        format_cases(&p),
        png_structure_cases(&p),
        png_size_and_tail_cases(&p),
        jpeg_cases(&p),
    ]
    .concat();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for (name, bytes, want) in &cases {
        let got = code(bytes);
        if got != *want {
            wrong.push(format!(
                "{name}: want {want}, got {got} ({:?})",
                check(bytes, &REKOGNITION).err()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn rejections_say_what_is_wrong_in_words() {
    let tall = png_of(&[
        ihdr(1, 100_000, 8, 0),
        chunk(b"IDAT", &[0x78, 0x9C]),
        chunk(b"IEND", &[]),
    ]);
    let err = check(&tall, &REKOGNITION).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("the image is 1x100000 pixels; each side must be at least 80")
    );
    let err = check(&with(&grey_png(100, 100), b"xyz"), &REKOGNITION).err();
    assert_eq!(
        err,
        Some(Rejection::TrailingData {
            format: Format::Png,
            bytes: 3
        })
    );
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("3 bytes follow the end of the image/png image; send the image alone")
    );
}

#[test]
fn the_pixel_cap_is_its_own_limit() {
    let limits = Limits {
        max_pixels: 9_999,
        ..REKOGNITION
    };
    assert_eq!(
        check(&grey_png(100, 100), &limits),
        Err(Rejection::TooManyPixels {
            width: 100,
            height: 100,
            max: 9_999
        })
    );
}

#[test]
fn inspect_reads_a_prefix() {
    // The whole object in the prefix: the full check.
    let small = grey_png(100, 100);
    let whole = inspect(&small, small.len() as u64, &REKOGNITION);
    assert_eq!(whole.map(|i| i.image.is_some()), Ok(true));
    let polyglot = with(&small, b"PK");
    assert_eq!(
        inspect(&polyglot, polyglot.len() as u64, &REKOGNITION).map_err(|e| e.code()),
        Err("trailing_data")
    );
    // A prefix of a larger object: signature and header only. The cat's first image data
    // starts at byte 5,825, after its colour profile: a 4 KiB prefix cannot say its size.
    let short = inspect(&CAT[..4096], CAT.len() as u64, &REKOGNITION);
    assert_eq!(
        short,
        Ok(image_check::Inspected {
            format: Format::Png,
            image: None
        })
    );
    let head = inspect(&CAT[..65_536], CAT.len() as u64, &REKOGNITION);
    assert_eq!(
        head,
        Ok(image_check::Inspected {
            format: Format::Png,
            image: Some(Image {
                format: Format::Png,
                width: 451,
                height: 300
            })
        })
    );
    let jpeg = inspect(&ROCKET[..16], ROCKET.len() as u64, &REKOGNITION);
    assert_eq!(
        jpeg,
        Ok(image_check::Inspected {
            format: Format::Jpeg,
            image: None
        })
    );
    assert_eq!(
        inspect(b"%PDF-1.7", 100_000, &REKOGNITION),
        Err(Rejection::NotAnImage)
    );
    let huge = png_of(&[ihdr(20_000, 100, 8, 0), chunk(b"IDAT", &[0x78, 0x9C])]);
    assert_eq!(
        inspect(&huge, 1 << 20, &REKOGNITION).map_err(|e| e.code()),
        Err("image_dimensions_too_large")
    );
}

/// A mutation of a valid image: some bytes overwritten, then possibly cut or extended.
fn mutate(base: &[u8], edits: &[(usize, u8)], cut: Option<usize>, tail: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(at, v) in edits {
        let i = at % b.len();
        b[i] = v;
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b.extend_from_slice(tail);
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = check(&bytes, &REKOGNITION);
        let _ = inspect(&bytes, bytes.len() as u64 + 10, &REKOGNITION);
    }

    #[test]
    fn random_bytes_behind_a_signature_never_pass(
        png in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut b = if png { b"\x89PNG\r\n\x1a\n".to_vec() } else { vec![0xFF, 0xD8, 0xFF] };
        b.extend_from_slice(&bytes);
        prop_assert!(check(&b, &REKOGNITION).is_err());
    }

    #[test]
    fn mutated_pngs_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
        tail in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let b = mutate(&grey_png(96, 96), &edits, cut, &tail);
        if let Ok(img) = check(&b, &REKOGNITION) {
            // Whatever passes is a real image within the limits.
            prop_assert!(img.width >= 80 && img.height >= 80);
        }
    }

    #[test]
    fn mutated_jpegs_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
        tail in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let b = mutate(ROCKET, &edits, cut, &tail);
        if let Ok(img) = check(&b, &REKOGNITION) {
            prop_assert!(img.width >= 80 && img.height >= 80);
        }
    }
}
