//! Proving a deployed stage: the smoke test (`smoke`, with its quota race in `quota`), the
//! IAM helpers that show, on the local environment, that enforcement is real (`local_iam`),
//! and the mutation check that a user's session cannot reach another user's data
//! (`isolation`).

pub mod isolation;
pub mod local_iam;
pub mod quota;
pub mod smoke;
