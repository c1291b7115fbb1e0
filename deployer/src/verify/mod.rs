//! Proving a deployed stage: the smoke test (`smoke`) and the IAM helpers that show, on the
//! local environment, that enforcement is real (`local_iam`).

pub mod local_iam;
pub mod smoke;
