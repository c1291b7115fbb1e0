//! AWS mechanics every command shares: where a command runs and its SDK clients (`aws`),
//! CloudFormation (`cfn`), content-addressed artifacts (`assets`), one typed view of a
//! deployed stage (`stage`), SDK errors in words (`error`), a stage's users and sign-in
//! (`cognito`), its queues (`queue`), the account's DetectLabels quota (`quotas`) and the
//! stack's drift (`drift`).

pub mod assets;
pub mod aws;
pub mod cfn;
pub mod cognito;
pub mod drift;
pub mod error;
pub mod queue;
pub mod quotas;
pub mod stage;
