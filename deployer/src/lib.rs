//! Everything after synthesis: building and packaging the handlers for Lambda (`build`,
//! `zip`, `elf`, `toolchain`) and the managed Python tools (`pyenv`). Plain config structs in,
//! typed errors out; printing is the caller's business.

pub mod build;
pub mod elf;
pub mod model;
pub mod pyenv;
pub mod toolchain;
pub mod zip;
