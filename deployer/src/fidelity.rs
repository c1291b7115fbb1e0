//! Where the pinned emulator authorizes differently from AWS, and the local environment is
//! made to follow AWS instead. Each fix is a small edit of the installed MiniStack, checked
//! against the exact text it replaces: a MiniStack that no longer has that text stops the
//! start with an error, so no fix is silently lost or applied to code it was not written for.
//!
//! - IAM `SimulatePrincipalPolicy` is authorized on the principal it simulates (its
//!   `PolicySourceArn`: a user, group or role, per the Service Authorization Reference for
//!   IAM). MiniStack 1.5.33 takes the resource of IAM actions only from `RoleName`,
//!   `UserName`, `PolicyArn` or `GroupName`, so it checks this action against `*`, and a
//!   policy that grants it on the function roles only (the deployer's) is refused.
//! - State survives a killed emulator. AWS keeps what it holds whatever happens to a process;
//!   MiniStack 1.5.33 writes its state (`PERSIST_STATE`) only when it shuts down cleanly, so a
//!   killed or crashed emulator came back with buckets, tables and stacks from its previous
//!   clean stop, pointing at objects and items that had changed since. With the fix, a save of
//!   every service's state follows each request by a second at most (one save per second
//!   however many requests arrive).

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// One edit: in `file` (below `site-packages/ministack/`), `anchor` gains `insert` before it.
struct Fix {
    file: &'static str,
    anchor: &'static str,
    insert: &'static str,
}

const FIXES: &[Fix] = &[
    Fix {
        file: "core/iam_actions.py",
        anchor: "        role_name = _query_param(query_params, \"RoleName\")\n",
        insert: "        # image-pipeline fidelity fix: SimulatePrincipalPolicy acts on its PolicySourceArn.\n        policy_source = _query_param(query_params, \"PolicySourceArn\")\n        if policy_source:\n            return policy_source\n",
    },
    Fix {
        file: "app.py",
        anchor: "async def app(scope, receive, send):\n",
        insert: SAVE_SOON,
    },
    Fix {
        file: "app.py",
        anchor: "    method = scope[\"method\"]\n    path = scope[\"path\"]\n",
        insert: "    # image-pipeline fidelity fix: state is saved a moment after each request.\n    if PERSIST_STATE:\n        _image_pipeline_save_soon()\n",
    },
];

/// A save of every service's state, at most a second after the request that asks for it; one
/// pending save at a time. Requests are served after startup has loaded the saved state, so a
/// save never overwrites it with an empty one.
const SAVE_SOON: &str = r#"# image-pipeline fidelity fix: state survives a killed emulator.
_image_pipeline_save_pending = False


def _image_pipeline_save_soon():
    global _image_pipeline_save_pending
    if _image_pipeline_save_pending:
        return
    _image_pipeline_save_pending = True

    async def _save():
        global _image_pipeline_save_pending
        await asyncio.sleep(1.0)
        _image_pipeline_save_pending = False
        try:
            save_all(_build_persistence_save_dict())
        except Exception as e:
            logger.error("image-pipeline: saving state failed: %s", e)

    asyncio.get_running_loop().create_task(_save())


"#;

#[derive(Debug, Error)]
pub enum FidelityError {
    #[error("cannot find ministack's {file} in the virtualenv {venv}")]
    Missing { file: &'static str, venv: PathBuf },
    #[error(
        "ministack's {file} no longer has the code the local environment's fix was written for; update deployer/src/fidelity.rs for this version"
    )]
    Changed { file: &'static str },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Applies every fix to the MiniStack installed in the virtualenv `venv`; already applied
/// fixes are left as they are.
pub fn apply(venv: &Path) -> Result<(), FidelityError> {
    let package = site_packages(venv)?.join("ministack");
    for fix in FIXES {
        let path = package.join(fix.file);
        let io = |source| FidelityError::Io {
            path: path.clone(),
            source,
        };
        let text = fs::read_to_string(&path).map_err(io)?;
        if let Some(fixed) = patched(&text, fix)? {
            fs::write(&path, fixed).map_err(io)?;
        }
    }
    Ok(())
}

/// The text with `fix` applied, or `None` when it already is.
fn patched(text: &str, fix: &Fix) -> Result<Option<String>, FidelityError> {
    let applied = format!("{}{}", fix.insert, fix.anchor);
    if text.contains(&applied) {
        return Ok(None);
    }
    if text.matches(fix.anchor).count() != 1 {
        return Err(FidelityError::Changed { file: fix.file });
    }
    Ok(Some(text.replacen(fix.anchor, &applied, 1)))
}

fn site_packages(venv: &Path) -> Result<PathBuf, FidelityError> {
    let missing = || FidelityError::Missing {
        file: "site-packages",
        venv: venv.to_path_buf(),
    };
    fs::read_dir(venv.join("lib"))
        .map_err(|_| missing())?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("ministack").is_dir())
        .ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const BEFORE: &str = "    if service == \"iam\":\n        role_name = _query_param(query_params, \"RoleName\")\n        if role_name:\n";

    #[test]
    fn a_fix_applies_once_and_refuses_code_it_was_not_written_for() {
        let fix = &FIXES[0];
        let once = patched(BEFORE, fix).unwrap().unwrap();
        assert!(once.contains("PolicySourceArn"));
        assert!(once.ends_with(&format!("{}        if role_name:\n", fix.anchor)));
        assert_eq!(
            patched(&once, fix).unwrap(),
            None,
            "applying twice changes nothing"
        );
        assert!(matches!(
            patched("something else entirely", fix),
            Err(FidelityError::Changed { .. })
        ));
    }
}
