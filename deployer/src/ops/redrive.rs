//! `redrive`: after a fix, moves the messages the work queue gave up on (its dead-letter queue)
//! back to the work queue, where the process function receives them again with a fresh count
//! of receives.
//!
//! It moves them with `ReceiveMessage`, `SendMessageBatch` and `DeleteMessageBatch`, which the
//! local environment implements as AWS does (it has no `StartMessageMoveTask`), so one path
//! runs in both: a message leaves the dead-letter queue only once the work queue has it.

use serde::{Deserialize, Serialize};
use stack::Stage;
use thiserror::Error;

use crate::cloud::aws::{self, AwsError, Identity, Target};
use crate::cloud::queue::{self, QueueCounts};
use crate::cloud::stage::StageError;
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct RedriveConfig {
    pub target: Target,
    pub stage: Stage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedriveReport {
    pub stack: String,
    pub stage: String,
    pub target: String,
    pub identity: Identity,
    pub dead_letter_queue_url: String,
    pub work_queue_url: String,
    /// The dead-letter queue before the move.
    pub before: QueueCounts,
    /// Messages moved to the work queue.
    pub moved: u64,
    /// What could not be moved, and why; those messages stay in the dead-letter queue.
    pub failed: Vec<String>,
    /// The dead-letter queue after the move.
    pub after: QueueCounts,
}

#[derive(Debug, Error)]
pub enum RedriveError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("{0}")]
    Queue(String),
}

/// Moves the stage's dead letters back to its work queue.
pub async fn redrive(
    cfg: &RedriveConfig,
    progress: &dyn Progress,
) -> Result<RedriveReport, RedriveError> {
    let (clients, identity) = aws::connect(&cfg.target).await?;
    let stage = crate::cloud::stage::read(&clients.cfn, &cfg.target, &cfg.stage).await?;
    let (from, to) = (&stage.dead_letter_queue_url, &stage.work_queue_url);
    let before = queue::queue_counts(&clients.sqs, from)
        .await
        .map_err(RedriveError::Queue)?;
    progress.step(&format!(
        "moving the dead-letter queue's messages ({} waiting, {} in flight) to the work queue",
        before.visible, before.in_flight
    ));
    let moved = queue::move_messages(&clients.sqs, from, to, &|n| {
        progress.step(&format!("{n} moved"));
    })
    .await
    .map_err(RedriveError::Queue)?;
    let after = queue::queue_counts(&clients.sqs, from)
        .await
        .map_err(RedriveError::Queue)?;
    Ok(RedriveReport {
        stack: cfg.stage.stack_name(),
        stage: cfg.stage.as_str().to_string(),
        target: cfg.target.describe(),
        identity,
        dead_letter_queue_url: from.clone(),
        work_queue_url: to.clone(),
        before,
        moved: moved.moved,
        failed: moved.failed,
        after,
    })
}
