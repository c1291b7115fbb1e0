//! Proving a deployed stage: the smoke test (`smoke`, with its quota race in `quota`) and the
//! IAM helpers that show, on the local environment, that enforcement is real (`local_iam`).

pub mod local_iam;
pub mod quota;
pub mod smoke;
