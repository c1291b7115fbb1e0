//! The commands that change AWS: the bootstrap stack (`bootstrap`), a stage's deploy
//! (`deploy`) and teardown (`teardown`), its users (`users`), its dead letters moved back to
//! work (`redrive`), and the policies around them (`permissions`).

pub mod bootstrap;
pub mod deploy;
pub mod permissions;
pub mod redrive;
pub mod teardown;
pub mod users;
