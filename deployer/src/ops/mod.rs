//! The commands that change AWS: the bootstrap stack (`bootstrap`), a stage's deploy
//! (`deploy`) and teardown (`teardown`), its users (`users`), and the policies around them
//! (`permissions`).

pub mod bootstrap;
pub mod deploy;
pub mod permissions;
pub mod teardown;
pub mod users;
