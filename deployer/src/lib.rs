//! Everything after synthesis: building and packaging the handlers for Lambda (`build`,
//! `zip`, `elf`, `toolchain`), deploying them (`aws`, `assets`, `cfn`, `deploy`), proving and
//! removing a deployment (`smoke`, `teardown`), looking at one (`status`, `logs`, `trace`), the bootstrap stack (`bootstrap`), the
//! policies around a deploy (`permissions`), the local environment (`local`, `tls`, `fidelity`, `local_iam`, `model`)
//! and the managed Python tools (`pyenv`). Plain config structs in, typed errors out; long
//! work reports through one `progress::Progress`, and printing is the caller's business.

pub mod assets;
pub mod aws;
pub mod bootstrap;
pub mod build;
pub mod cfn;
pub mod cmd;
pub mod deploy;
pub mod elf;
pub mod fidelity;
pub mod local;
pub mod local_iam;
pub mod logs;
pub mod model;
pub mod permissions;
pub mod progress;
pub mod pyenv;
pub mod smoke;
pub mod status;
pub mod teardown;
pub mod tls;
pub mod toolchain;
pub mod trace;
pub mod watch;
pub mod zip;
