//! AWS mechanics every command shares: where a command runs and its SDK clients (`aws`),
//! CloudFormation (`cfn`), content-addressed artifacts (`assets`), one typed view of a
//! deployed stage (`stage`), and SDK errors in words (`error`).

pub mod assets;
pub mod aws;
pub mod cfn;
pub mod error;
pub mod queue;
pub mod stage;
