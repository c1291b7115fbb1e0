//! The commands that change AWS: the bootstrap stack (`bootstrap`), a stage's deploy
//! (`deploy`) and teardown (`teardown`), its users (`users`), its dead letters moved back to
//! work (`redrive`), and the policies around them (`permissions`); what a deploy does to
//! permissions (`security`) and the CI workflow `bootstrap --ci github` writes (`workflow`).

pub mod bootstrap;
pub mod deploy;
pub mod permissions;
pub mod redrive;
pub mod security;
pub mod teardown;
pub mod users;
pub mod workflow;
