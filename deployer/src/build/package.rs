//! Packaging one binary: its size within Lambda's limits, a deterministic zip that is
//! verified to round-trip, stored under its hash.

use std::fs;
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{Artifact, BuildError, MAX_ZIP_BYTES, zip};
use crate::util::FileError;

pub(super) fn limit(
    function: &str,
    what: &'static str,
    size: u64,
    limit: u64,
) -> Result<(), BuildError> {
    if size > limit {
        return Err(BuildError::TooLarge {
            function: function.into(),
            what,
            size,
            limit,
        });
    }
    Ok(())
}

/// Zips, verifies the zip round-trips to the same binary, and stores it under its hash,
/// removing the function's older zips.
pub(super) fn package(
    function: &str,
    effort: zip::Effort,
    binary: &[u8],
    binary_sha256: String,
    dir: &Path,
) -> Result<Artifact, BuildError> {
    let zip_err = |source| BuildError::Zip {
        function: function.into(),
        source,
    };
    let bytes = zip::bootstrap_zip(binary, effort).map_err(zip_err)?;
    let entry = zip::read_single(&bytes).map_err(zip_err)?;
    if entry.name != zip::ENTRY || entry.mode != zip::MODE || entry.data != binary {
        return Err(zip_err(zip::ZipError::Invalid(
            "the entry does not match the binary",
        )));
    }
    limit(function, "the zip", bytes.len() as u64, MAX_ZIP_BYTES)?;
    let digest = Sha256::digest(&bytes);
    let sha256 = hex::encode(digest);
    let fdir = dir.join(function);
    fs::create_dir_all(&fdir).map_err(|source| FileError::Write {
        path: fdir.clone(),
        source,
    })?;
    let name = format!("{sha256}.zip");
    if let Ok(entries) = fs::read_dir(&fdir) {
        for e in entries.flatten() {
            if e.file_name() != name.as_str() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let path = fdir.join(&name);
    fs::write(&path, &bytes).map_err(|source| FileError::Write { path, source })?;
    Ok(Artifact {
        function: function.into(),
        code_sha256: base64::engine::general_purpose::STANDARD.encode(digest),
        zip: format!("{function}/{name}"),
        sha256,
        zip_bytes: bytes.len() as u64,
        binary_bytes: binary.len() as u64,
        binary_sha256,
    })
}
