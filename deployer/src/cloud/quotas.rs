//! The account's DetectLabels quota, as Service Quotas gives it: the applied value when the
//! account has one, else AWS's default for the region. The process function is paced below it
//! (`stack::Pacing`).

use serde::{Deserialize, Serialize};

/// Rekognition's service code in Service Quotas.
pub const REKOGNITION: &str = "rekognition";

/// Where a stage's DetectLabels quota came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaSource {
    /// `deploy --labels-tps Q`.
    Flag,
    /// Service Quotas: the value applied to the account.
    Applied,
    /// Service Quotas: AWS's default for the region (the account has no applied value).
    AwsDefault,
    /// The local label service's rate (`local up --labels-tps`).
    LocalService,
    /// What the stage was deployed with, when nothing else answered.
    AsDeployed,
    /// `stack::Pacing::DEFAULT_QUOTA_TPS`, when nothing else answered.
    Default,
}

impl QuotaSource {
    pub fn describe(self) -> &'static str {
        match self {
            QuotaSource::Flag => "--labels-tps",
            QuotaSource::Applied => "Service Quotas, the account's applied value",
            QuotaSource::AwsDefault => "Service Quotas, AWS's default for the region",
            QuotaSource::LocalService => "the local label service's rate",
            QuotaSource::AsDeployed => "as deployed",
            QuotaSource::Default => "the default",
        }
    }
}

/// One DetectLabels quota Service Quotas lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub name: String,
    pub code: String,
    /// Calls a second.
    pub value: f64,
}

/// The DetectLabels rate quota among `quotas` (name, code, value): a quota whose name names
/// the DetectLabels operation and a rate (per second, or TPS). When several do, the smallest:
/// the pace must stay under each.
pub fn pick(quotas: impl IntoIterator<Item = Found>) -> Option<Found> {
    quotas
        .into_iter()
        .filter(|q| {
            let name = q.name.to_ascii_lowercase();
            let rate = name.contains("per second") || name.contains("tps");
            name.contains("detectlabels") && rate && q.value.is_finite() && q.value > 0.0
        })
        .min_by(|a, b| a.value.total_cmp(&b.value))
}

/// The quota as calls a second the pace can use: whole calls, at least one.
pub fn whole_calls(value: f64) -> u32 {
    let floor = value.floor();
    if floor < 1.0 {
        1
    } else if floor >= f64::from(stack::Pacing::MAX_QUOTA_TPS) {
        stack::Pacing::MAX_QUOTA_TPS
    } else {
        floor as u32
    }
}

fn found(q: &aws_sdk_servicequotas::types::ServiceQuota) -> Option<Found> {
    Some(Found {
        name: q.quota_name()?.to_string(),
        code: q.quota_code().unwrap_or_default().to_string(),
        value: q.value()?,
    })
}

/// The account's DetectLabels quota in the client's region, and where it came from; `None`
/// when Service Quotas lists none. An error says which call failed and why.
pub async fn detect_labels_quota(
    client: &aws_sdk_servicequotas::Client,
) -> Result<Option<(Found, QuotaSource)>, String> {
    let applied: Vec<_> = client
        .list_service_quotas()
        .service_code(REKOGNITION)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| {
            format!(
                "servicequotas:ListServiceQuotas: {}",
                crate::cloud::error::chain(&e)
            )
        })?;
    if let Some(q) = pick(applied.iter().filter_map(found)) {
        return Ok(Some((q, QuotaSource::Applied)));
    }
    let defaults: Vec<_> = client
        .list_aws_default_service_quotas()
        .service_code(REKOGNITION)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| {
            format!(
                "servicequotas:ListAWSDefaultServiceQuotas: {}",
                crate::cloud::error::chain(&e)
            )
        })?;
    Ok(pick(defaults.iter().filter_map(found)).map(|q| (q, QuotaSource::AwsDefault)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, value: f64) -> Found {
        Found {
            name: name.into(),
            code: "L-0".into(),
            value,
        }
    }

    #[test]
    fn the_detect_labels_rate_is_picked_and_other_operations_and_counts_are_not() {
        let quotas = [
            q(
                "Transactions per second per account for the DetectFaces operation",
                50.0,
            ),
            q(
                "Transactions per second per account for the DetectLabels operation",
                20.0,
            ),
            q("Maximum number of DetectLabels jobs", 2.0),
            q("Concurrent StartLabelDetection jobs", 20.0),
        ];
        let got = pick(quotas).map(|f| f.value);
        assert_eq!(got, Some(20.0));
    }

    #[test]
    fn of_two_detect_labels_rates_the_smaller_is_kept() {
        let quotas = [
            q("DetectLabels TPS", 50.0),
            q("Transactions per second for DetectLabels", 10.0),
        ];
        assert_eq!(pick(quotas).map(|f| f.value), Some(10.0));
        assert_eq!(pick([q("DetectFaces TPS", 5.0)]), None);
    }

    #[test]
    fn a_quota_becomes_whole_calls_of_at_least_one() {
        assert_eq!(whole_calls(0.5), 1);
        assert_eq!(whole_calls(20.9), 20);
        assert_eq!(whole_calls(1e12), stack::Pacing::MAX_QUOTA_TPS);
    }
}
