//! Everything after synthesis, as a library: plain config structs in, typed reports and errors
//! out, and long work told to a [`progress::Progress`]; printing is the caller's business.
//!
//! Folders are concerns, and each imports only from itself or from the layers below it
//! (ARCHITECTURE.md draws them; `xtask`'s tidy test holds them):
//!
//! - `util`, `progress`: helpers with one home, and the one way long work reports;
//! - `tools`: running tools, and the pinned Python virtualenvs;
//! - `build`: the handlers built and packaged for Lambda (no AWS SDK here);
//! - `cloud`: AWS mechanics: where a command runs, CloudFormation, assets, a deployed stage;
//! - `local`: the local environment (the emulator over TLS, its fidelity fixes, the label model);
//! - `ops`: the commands that change AWS: bootstrap, deploy, teardown, and their policies;
//! - `observe`: reading a stage: status, logs, trace, watch;
//! - `verify`: proving a stage: the smoke test and the IAM checks.

pub mod build;
pub mod cloud;
pub mod local;
pub mod observe;
pub mod ops;
pub mod progress;
pub mod tools;
pub mod util;
pub mod verify;
