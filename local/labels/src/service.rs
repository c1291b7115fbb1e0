//! `RekognitionService.DetectLabels` in AWS JSON 1.1: request validation, image loading (bytes
//! or an S3 object from the local S3), labels with aggregated parents, image properties,
//! Rekognition-shaped errors, and fault injection for retry tests.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, KeyResolver};
use crate::model::{MODEL_VERSION, Model};
use crate::props::{ImageProperties, analyse};

/// Rekognition's limits: 5 MB as `Bytes`, 15 MB from S3.
pub const MAX_BYTES: usize = 5 * 1024 * 1024;
pub const MAX_S3_BYTES: i64 = 15 * 1024 * 1024;
pub const TARGET: &str = "RekognitionService.DetectLabels";

/// An error in Rekognition's shape: `__type`, `message`, HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: &'static str,
    pub message: String,
    pub status: u16,
}

impl ApiError {
    pub fn new(kind: &'static str, status: u16, message: impl Into<String>) -> Self {
        Self {
            kind,
            status,
            message: message.into(),
        }
    }

    pub fn invalid_parameter(m: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", 400, m)
    }

    pub fn invalid_format(m: impl Into<String>) -> Self {
        Self::new("InvalidImageFormatException", 400, m)
    }

    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new("ImageTooLargeException", 400, m)
    }

    pub fn invalid_s3_object(m: impl Into<String>) -> Self {
        Self::new("InvalidS3ObjectException", 400, m)
    }

    pub fn internal(m: impl Into<String>) -> Self {
        Self::new("InternalServerError", 500, m)
    }

    pub fn body(&self) -> String {
        serde_json::json!({"__type": self.kind, "message": self.message}).to_string()
    }
}

/// Which failure an injected fault produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Throttling,
    ProvisionedThroughputExceeded,
    InternalServerError,
}

impl std::str::FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ThrottlingException" => Ok(Self::Throttling),
            "ProvisionedThroughputExceededException" => Ok(Self::ProvisionedThroughputExceeded),
            "InternalServerError" => Ok(Self::InternalServerError),
            other => Err(format!(
                "unknown fault `{other}`: use ThrottlingException, ProvisionedThroughputExceededException or InternalServerError"
            )),
        }
    }
}

impl FaultKind {
    fn error(self) -> ApiError {
        match self {
            Self::Throttling => {
                ApiError::new("ThrottlingException", 400, "Rate exceeded (injected fault)")
            }
            Self::ProvisionedThroughputExceeded => ApiError::new(
                "ProvisionedThroughputExceededException",
                400,
                "Provisioned rate exceeded (injected fault)",
            ),
            Self::InternalServerError => {
                ApiError::internal("Internal server error (injected fault)")
            }
        }
    }
}

/// Fault injection: the first `first` calls fail, then each call fails with probability
/// `rate` (a seeded generator, so runs repeat).
#[derive(Debug)]
pub struct Faults {
    pub kind: FaultKind,
    remaining: AtomicU64,
    rate: f64,
    rng: Mutex<u64>,
    pub injected: AtomicU64,
}

impl Faults {
    pub fn new(kind: FaultKind, first: u64, rate: f64, seed: u64) -> Self {
        Self {
            kind,
            remaining: AtomicU64::new(first),
            rate: rate.clamp(0.0, 1.0),
            rng: Mutex::new(seed | 1),
            injected: AtomicU64::new(0),
        }
    }

    pub fn none() -> Self {
        Self::new(FaultKind::Throttling, 0, 0.0, 1)
    }

    fn next_unit(&self) -> f64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        // xorshift64*: small, seedable, good enough to spread faults.
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn check(&self) -> Result<(), ApiError> {
        let take_first = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
            .is_ok();
        if take_first || (self.rate > 0.0 && self.next_unit() < self.rate) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(self.kind.error());
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct S3ObjectRef {
    bucket: Option<String>,
    name: Option<String>,
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageRef {
    bytes: Option<String>,
    s3_object: Option<S3ObjectRef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Request {
    image: Option<ImageRef>,
    max_labels: Option<i64>,
    min_confidence: Option<f64>,
    features: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ParentOut {
    pub name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LabelOut {
    pub name: String,
    pub confidence: f32,
    pub parents: Vec<ParentOut>,
    pub instances: Vec<serde_json::Value>,
    pub aliases: Vec<serde_json::Value>,
    pub categories: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub labels: Vec<LabelOut>,
    pub label_model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_properties: Option<ImageProperties>,
}

/// What stub mode answers.
fn stub_answer() -> Result<String, ApiError> {
    serde_json::to_string(&Response {
        labels: vec![LabelOut {
            name: STUB_LABEL.into(),
            confidence: 99.0,
            parents: Vec::new(),
            instances: Vec::new(),
            aliases: Vec::new(),
            categories: Vec::new(),
        }],
        label_model_version: STUB_MODEL_VERSION,
        image_properties: None,
    })
    .map_err(|e| ApiError::internal(e.to_string()))
}

/// Reads the object an `S3Object` names, as `caller` (Rekognition reads S3 with the caller's
/// permissions); a missing or forbidden object is `InvalidS3ObjectException`.
pub trait ObjectSource: Send + Sync {
    fn get(
        &self,
        caller: &Caller,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Vec<u8>, ApiError>;
}

/// The emulator is shared by the object reader and the key resolver.
impl<T: ObjectSource> ObjectSource for std::sync::Arc<T> {
    fn get(
        &self,
        caller: &Caller,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Vec<u8>, ApiError> {
        self.as_ref().get(caller, bucket, key, version)
    }
}

pub struct Service {
    pub model: Model,
    pub faults: Faults,
    pub objects: Box<dyn ObjectSource>,
    /// Who may sign requests.
    pub keys: Box<dyn KeyResolver>,
    /// The rate calls are admitted at, and the counts of `GET /stats`.
    pub meter: crate::meter::Meter,
    /// Stub mode, for scale runs: every well-formed call whose image can be read answers
    /// after this long with [`STUB_LABEL`] from [`STUB_MODEL_VERSION`], and the model is not
    /// run. Authentication, authorization, the rate and the S3 read as the caller stay real.
    pub stub: Option<std::time::Duration>,
}

/// The one label stub mode answers: named so that nobody takes it for the model's.
pub const STUB_LABEL: &str = "Stub (not the model)";
/// The `LabelModelVersion` of stub answers.
pub const STUB_MODEL_VERSION: &str = "stub";

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("model", &self.model)
            .field("faults", &self.faults)
            .finish()
    }
}

/// The largest side an image may have; a header claiming more is refused before anything is
/// allocated for its pixels.
pub const MAX_DIMENSION: u32 = 10_000;
/// The most memory decoding one image may allocate.
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// Decodes an image within [`MAX_DIMENSION`] and [`MAX_DECODE_BYTES`]: a decompression bomb
/// (a tiny file whose header claims 65535x65535) is refused from its header.
pub fn decode(bytes: &[u8]) -> Result<image::DynamicImage, ApiError> {
    let invalid = || ApiError::invalid_format("Request has invalid image format");
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| invalid())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ApiError::too_large(format!(
            "Image size is too large (at most {MAX_DIMENSION} pixels a side)"
        )),
        _ => invalid(),
    })
}

impl Service {
    /// Handles one authenticated request body; `Ok` is the JSON response body.
    pub fn detect_labels(&self, caller: &Caller, body: &[u8]) -> Result<String, ApiError> {
        // Authorized before anything in the request is looked at, as on AWS.
        if !caller.may_detect_labels {
            return Err(ApiError::new(
                "AccessDeniedException",
                400,
                format!(
                    "User: {} is not authorized to perform: rekognition:DetectLabels",
                    caller.principal_arn
                ),
            ));
        }
        let req: Request = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid_parameter(format!("request is not valid JSON: {e}")))?;
        let max_labels = match req.max_labels {
            None => 1000,
            Some(n) if n >= 0 => n as usize,
            Some(n) => {
                return Err(ApiError::invalid_parameter(format!(
                    "MaxLabels {n} must not be negative"
                )));
            }
        };
        let min_confidence = req.min_confidence.unwrap_or(55.0);
        if !(0.0..=100.0).contains(&min_confidence) {
            return Err(ApiError::invalid_parameter(
                "MinConfidence must be between 0 and 100",
            ));
        }
        let features = req
            .features
            .unwrap_or_else(|| vec!["GENERAL_LABELS".into()]);
        for f in &features {
            if f != "GENERAL_LABELS" && f != "IMAGE_PROPERTIES" {
                return Err(ApiError::invalid_parameter(format!("unknown feature {f}")));
            }
        }
        let image = req
            .image
            .ok_or_else(|| ApiError::invalid_parameter("Image is required"))?;
        // Faults apply to well-formed requests, as throttling would.
        self.faults.check()?;
        let bytes = self.image_bytes(caller, image)?;
        if let Some(latency) = self.stub {
            std::thread::sleep(latency);
            return stub_answer();
        }
        let img = decode(&bytes)?;
        let labels = if features.iter().any(|f| f == "GENERAL_LABELS") {
            self.labels(&img, max_labels, min_confidence as f32)?
        } else {
            Vec::new()
        };
        let image_properties = features
            .iter()
            .any(|f| f == "IMAGE_PROPERTIES")
            .then(|| analyse(&img));
        serde_json::to_string(&Response {
            labels,
            label_model_version: MODEL_VERSION,
            image_properties,
        })
        .map_err(|e| ApiError::internal(e.to_string()))
    }

    fn image_bytes(&self, caller: &Caller, image: ImageRef) -> Result<Vec<u8>, ApiError> {
        match (image.bytes, image.s3_object) {
            (Some(_), Some(_)) => Err(ApiError::invalid_parameter(
                "give either Image.Bytes or Image.S3Object, not both",
            )),
            (None, None) => Err(ApiError::invalid_parameter("Image needs Bytes or S3Object")),
            (Some(b64), None) => {
                // Base64 is 4 characters per 3 bytes: refuse oversize before decoding.
                if b64.len() > MAX_BYTES.div_ceil(3) * 4 + 4 {
                    return Err(ApiError::too_large(
                        "Image size is too large (5 MB for Bytes)",
                    ));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|_| ApiError::invalid_parameter("Image.Bytes is not valid base64"))?;
                if bytes.len() > MAX_BYTES {
                    return Err(ApiError::too_large(
                        "Image size is too large (5 MB for Bytes)",
                    ));
                }
                Ok(bytes)
            }
            (None, Some(o)) => {
                let (Some(bucket), Some(key)) = (o.bucket.as_deref(), o.name.as_deref()) else {
                    return Err(ApiError::invalid_parameter(
                        "S3Object needs Bucket and Name",
                    ));
                };
                let bytes = self
                    .objects
                    .get(caller, bucket, key, o.version.as_deref())?;
                if bytes.len() as i64 > MAX_S3_BYTES {
                    return Err(ApiError::too_large(
                        "Image size is too large (15 MB from S3)",
                    ));
                }
                Ok(bytes)
            }
        }
    }

    /// Labels like Rekognition's: each class counts for its own name and for every parent,
    /// so an aggregated label's confidence is the summed probability of its classes (and
    /// classes sharing a name are one label). When nothing reaches `min_confidence` on the
    /// whole image, the four corners and the centre (each [`CROP`] of a side) are looked at
    /// too, and each label keeps its best view: a thing that fills only part of the picture
    /// is still found. Highest first, filtered, truncated.
    fn labels(
        &self,
        img: &image::DynamicImage,
        max: usize,
        min_confidence: f32,
    ) -> Result<Vec<LabelOut>, ApiError> {
        let mut best = self.scores(img)?;
        if !best.values().any(|s| s.confidence >= min_confidence) {
            for view in crops(img) {
                for (name, s) in self.scores(&view)? {
                    let e = best.entry(name).or_insert(Score {
                        confidence: 0.0,
                        parents: s.parents.clone(),
                    });
                    e.confidence = e.confidence.max(s.confidence);
                }
            }
        }
        let mut out: Vec<LabelOut> = best
            .into_iter()
            .filter(|(_, s)| s.confidence >= min_confidence)
            .map(|(name, s)| LabelOut {
                name,
                confidence: s.confidence,
                parents: s
                    .parents
                    .into_iter()
                    .map(|name| ParentOut { name })
                    .collect(),
                instances: vec![],
                aliases: vec![],
                categories: vec![],
            })
            .collect();
        out.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then_with(|| a.name.cmp(&b.name))
        });
        out.truncate(max);
        for l in &mut out {
            l.confidence = (l.confidence * 1000.0).round() / 1000.0;
        }
        Ok(out)
    }

    /// Every label's confidence in one view, with its parents.
    fn scores(&self, img: &image::DynamicImage) -> Result<BTreeMap<String, Score>, ApiError> {
        let scored = self
            .model
            .classify(img)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut out: BTreeMap<String, Score> = BTreeMap::new();
        for s in &scored {
            let Some(label) = self.model.label(s.class) else {
                continue;
            };
            let confidence = s.probability * 100.0;
            let names = std::iter::once(&label.name).chain(&label.parents);
            for name in names {
                let parents = match self.model.taxonomy(name) {
                    Some(p) => p.to_vec(),
                    None => label.parents.clone(),
                };
                let e = out.entry(name.clone()).or_insert(Score {
                    confidence: 0.0,
                    parents,
                });
                e.confidence = (e.confidence + confidence).min(100.0);
            }
        }
        Ok(out)
    }
}

/// One label's confidence (percent) and its parents.
#[derive(Debug, Clone)]
struct Score {
    confidence: f32,
    parents: Vec<String>,
}

/// The share of each side a crop keeps.
pub const CROP: f32 = 0.6;

/// The four corners and the centre, each [`CROP`] of the width and the height.
fn crops(img: &image::DynamicImage) -> Vec<image::DynamicImage> {
    let (w, h) = (img.width(), img.height());
    let cw = ((w as f32 * CROP).round() as u32).clamp(1, w.max(1));
    let ch = ((h as f32 * CROP).round() as u32).clamp(1, h.max(1));
    let (right, bottom) = (w.saturating_sub(cw), h.saturating_sub(ch));
    [
        (0, 0),
        (right, 0),
        (0, bottom),
        (right, bottom),
        (right / 2, bottom / 2),
    ]
    .into_iter()
    .map(|(x, y)| img.crop_imm(x, y, cw, ch))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_are_the_corners_and_the_centre_inside_the_image() {
        let img = image::DynamicImage::new_rgb8(500, 300);
        let views = crops(&img);
        assert_eq!(views.len(), 5);
        for v in &views {
            assert_eq!((v.width(), v.height()), (300, 180));
        }
        // A 1-pixel image still gives five 1-pixel views.
        let tiny = image::DynamicImage::new_rgb8(1, 1);
        assert!(
            crops(&tiny)
                .iter()
                .all(|v| v.width() == 1 && v.height() == 1)
        );
    }

    #[test]
    fn faults_first_n_then_none() {
        let f = Faults::new(FaultKind::Throttling, 2, 0.0, 7);
        assert_eq!(f.check().map_err(|e| e.kind), Err("ThrottlingException"));
        assert_eq!(f.check().map_err(|e| e.kind), Err("ThrottlingException"));
        assert!(f.check().is_ok());
        assert_eq!(f.injected.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn fault_rate_is_roughly_honoured_and_repeatable() {
        let count = |seed| {
            let f = Faults::new(FaultKind::InternalServerError, 0, 0.25, seed);
            (0..4000).filter(|_| f.check().is_err()).count()
        };
        let n = count(42);
        assert!((800..1200).contains(&n), "{n}");
        assert_eq!(n, count(42));
    }

    #[test]
    fn fault_names_parse() {
        assert_eq!(
            "ProvisionedThroughputExceededException".parse(),
            Ok(FaultKind::ProvisionedThroughputExceeded)
        );
        assert!("Nope".parse::<FaultKind>().is_err());
    }
}
