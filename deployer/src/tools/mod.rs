//! Running outside tools: commands and their output (`cmd`), and the pinned Python
//! virtualenvs under `target/tools/` (`pyenv`).

pub mod cmd;
pub mod pyenv;
