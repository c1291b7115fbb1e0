//! Reading a deployed stage without changing it: one screen (`status`), its logs as one
//! stream (`logs`), one image's life (`trace`), and what `watch` polls (`watch`).

pub mod logs;
pub mod status;
pub mod trace;
pub mod watch;
