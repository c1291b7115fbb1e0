//! `IMAGE_PROPERTIES`: quality (brightness, sharpness, contrast) and dominant colours, computed
//! from the pixels on a 0–100 scale like Rekognition's.

use image::{DynamicImage, GrayImage, RgbImage};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Quality {
    pub brightness: f32,
    pub sharpness: f32,
    pub contrast: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DominantColor {
    pub red: u8,
    pub green: u8,
    pub blue: u8,
    pub hex_code: String,
    #[serde(rename = "CSSColor")]
    pub css_color: String,
    pub simplified_color: String,
    pub pixel_percent: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageProperties {
    pub quality: Quality,
    pub dominant_colors: Vec<DominantColor>,
}

/// Analysis runs on a copy at most this wide or high: properties of a photo do not need
/// every pixel, and the cost stays flat for large images.
const MAX_SIDE: u32 = 256;

pub fn analyse(img: &DynamicImage) -> ImageProperties {
    let small = if img.width().max(img.height()) > MAX_SIDE {
        img.thumbnail(MAX_SIDE, MAX_SIDE)
    } else {
        img.clone()
    };
    let rgb = small.to_rgb8();
    let gray = small.to_luma8();
    ImageProperties {
        quality: Quality {
            brightness: round1(brightness(&gray)),
            sharpness: round1(sharpness(&gray)),
            contrast: round1(contrast(&gray)),
        },
        dominant_colors: dominant_colors(&rgb, 5),
    }
}

fn round1(v: f32) -> f32 {
    (v * 10.0).round() / 10.0
}

/// Mean luminance, as a percentage of white.
fn brightness(g: &GrayImage) -> f32 {
    let n = g.pixels().len().max(1) as f64;
    let sum: f64 = g.pixels().map(|p| f64::from(p[0])).sum();
    (sum / n / 255.0 * 100.0) as f32
}

/// RMS contrast: the standard deviation of luminance against its maximum (half the range).
fn contrast(g: &GrayImage) -> f32 {
    let n = g.pixels().len().max(1) as f64;
    let mean: f64 = g.pixels().map(|p| f64::from(p[0])).sum::<f64>() / n;
    let var: f64 = g
        .pixels()
        .map(|p| (f64::from(p[0]) - mean).powi(2))
        .sum::<f64>()
        / n;
    (var.sqrt() / 127.5 * 100.0).min(100.0) as f32
}

/// Variance of the Laplacian (edge energy), mapped onto 0–100 with a soft knee: a flat image
/// is 0, a crisp photo approaches 100.
fn sharpness(g: &GrayImage) -> f32 {
    let (w, h) = g.dimensions();
    if w < 3 || h < 3 {
        return 0.0;
    }
    let at = |x: u32, y: u32| f64::from(g.get_pixel(x, y)[0]);
    let mut values = Vec::with_capacity(((w - 2) * (h - 2)) as usize);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            values.push(at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y));
        }
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (100.0 * (1.0 - (-var / 400.0).exp())) as f32
}

/// The simplified colour of one pixel, from its hue, saturation and value.
fn simplified(r: u8, g: u8, b: u8) -> &'static str {
    let (r, g, b) = (
        f32::from(r) / 255.0,
        f32::from(g) / 255.0,
        f32::from(b) / 255.0,
    );
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let sat = if max == 0.0 { 0.0 } else { delta / max };
    if max < 0.2 {
        return "black";
    }
    if sat < 0.15 {
        return if max > 0.85 { "white" } else { "grey" };
    }
    let hue = if delta == 0.0 {
        0.0
    } else if max == r {
        60.0 * (((g - b) / delta).rem_euclid(6.0))
    } else if max == g {
        60.0 * ((b - r) / delta + 2.0)
    } else {
        60.0 * ((r - g) / delta + 4.0)
    };
    match hue {
        h if !(15.0..345.0).contains(&h) => {
            if max < 0.6 && sat > 0.3 {
                "brown"
            } else if sat < 0.5 && max > 0.7 {
                "pink"
            } else {
                "red"
            }
        }
        h if h < 45.0 => {
            if max < 0.6 {
                "brown"
            } else {
                "orange"
            }
        }
        h if h < 70.0 => "yellow",
        h if h < 170.0 => "green",
        h if h < 260.0 => "blue",
        h if h < 300.0 => "purple",
        _ => "pink",
    }
}

fn dominant_colors(rgb: &RgbImage, top: usize) -> Vec<DominantColor> {
    // Group pixels by simplified colour, averaging each group's actual RGB.
    let mut groups: Vec<(&'static str, u64, [u64; 3])> = Vec::new();
    for p in rgb.pixels() {
        let name = simplified(p[0], p[1], p[2]);
        let idx = match groups.iter().position(|g| g.0 == name) {
            Some(i) => i,
            None => {
                groups.push((name, 0, [0; 3]));
                groups.len() - 1
            }
        };
        let g = &mut groups[idx];
        g.1 += 1;
        for c in 0..3 {
            g.2[c] += u64::from(p[c]);
        }
    }
    let total = rgb.pixels().len().max(1) as f32;
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    groups
        .into_iter()
        .take(top)
        .map(|(name, count, sum)| {
            let avg = |c: usize| (sum[c] / count.max(1)) as u8;
            let (red, green, blue) = (avg(0), avg(1), avg(2));
            DominantColor {
                red,
                green,
                blue,
                hex_code: format!("#{red:02x}{green:02x}{blue:02x}"),
                css_color: name.to_string(),
                simplified_color: name.to_string(),
                pixel_percent: round1(count as f32 / total * 100.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(r: u8, g: u8, b: u8) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_pixel(64, 64, image::Rgb([r, g, b])))
    }

    #[test]
    fn flat_images() {
        let white = analyse(&solid(255, 255, 255));
        assert_eq!(white.quality.brightness, 100.0);
        assert_eq!(white.quality.contrast, 0.0);
        assert_eq!(white.quality.sharpness, 0.0);
        assert_eq!(white.dominant_colors[0].simplified_color, "white");
        assert_eq!(white.dominant_colors[0].pixel_percent, 100.0);
        let black = analyse(&solid(0, 0, 0));
        assert_eq!(black.quality.brightness, 0.0);
        assert_eq!(black.dominant_colors[0].hex_code, "#000000");
    }

    #[test]
    fn a_checkerboard_is_sharp_and_contrasty() {
        let img = RgbImage::from_fn(64, 64, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                image::Rgb([255, 255, 255])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        let p = analyse(&DynamicImage::ImageRgb8(img));
        assert!(p.quality.contrast > 95.0, "{:?}", p.quality);
        assert!(p.quality.sharpness > 90.0, "{:?}", p.quality);
        assert!((p.quality.brightness - 50.0).abs() < 1.0);
        let names: Vec<&str> = p
            .dominant_colors
            .iter()
            .map(|c| c.simplified_color.as_str())
            .collect();
        assert_eq!(names, ["black", "white"]);
    }

    #[test]
    fn hues() {
        assert_eq!(simplified(230, 20, 20), "red");
        assert_eq!(simplified(20, 200, 40), "green");
        assert_eq!(simplified(30, 60, 220), "blue");
        assert_eq!(simplified(240, 220, 30), "yellow");
        assert_eq!(simplified(128, 128, 128), "grey");
        assert_eq!(simplified(110, 60, 20), "brown");
    }
}
