//! The image pipeline as a typed CloudFormation stack: the application model (`app`), a typed
//! template model (`template`, `resources`, `expr`) and the synthesis that joins them
//! (`synth`). Look in `synth` for where the S3 trigger and the API routes are wired.

pub mod app;
pub mod expr;
pub mod resources;
pub mod synth;
pub mod template;

pub use app::{App, Architecture, Pacing, Stage};
pub use expr::Expr;
pub use synth::{SynthOptions, synthesize};
pub use template::Template;
