//! Proving a deployed stage: the smoke test (`smoke`, with its quota race in `quota`), the
//! IAM helpers that show, on the local environment, that enforcement is real (`local_iam`),
//! the mutation check that a user's session cannot reach another user's data (`isolation`),
//! and an IAM user authorized by policy variables and at the local DetectLabels (`principals`).

pub mod isolation;
pub mod local_iam;
pub mod principals;
pub mod quota;
pub mod smoke;
