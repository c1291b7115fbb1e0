//! The local environment: MiniStack with IAM enforced over TLS and the label service
//! (`emulator`), its certificate (`tls`), the corrections that hold the emulator to AWS's
//! rules (`fidelity`), and the label model (`model`).

pub mod emulator;
pub mod fidelity;
pub mod model;
pub mod tls;
