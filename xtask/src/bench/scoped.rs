//! `cargo xtask bench scoped`: what per-user sessions cost the metadata function, against a
//! local stack with IAM enforced. Two views:
//!
//! - the query itself: the listing query with one session for every user (as before sessions
//!   were scoped), with a new user's session (`AssumeRole` with the session policy, then the
//!   query: a user's first request to a warm function), and with a cached session (every later
//!   request);
//! - the API: `GET /metadata` for a signed-in user, the user's first request to a function
//!   another user has already warmed, then the next ones.
//!
//! The figures are p50s; the target is a warm request within 20 ms of the unscoped one.

use anyhow::{Context, Result};
use deployer::cloud::aws::{LocalCredentials, Target};
use deployer::ops::deploy::DeployReport;
use deployer::ops::teardown::TeardownReport;
use serde_json::{Value, json};

use super::{LocalBench, median, percentile};

const ENV: LocalBench = LocalBench {
    port: 4588,
    labels_port: 4621,
    stage: "scoped",
};
/// Samples of each kind.
const SAMPLES: usize = 40;
/// The most a warm request may add to the unscoped one.
const WARM_BUDGET_MS: f64 = 20.0;

fn xtask<T: serde::de::DeserializeOwned>(args: &[&str]) -> Result<T> {
    Ok(ENV.xtask(args)?.1)
}

pub fn run() -> Result<Value> {
    ENV.run(|cfg| {
        xtask::<TeardownReport>(&["teardown"])?;
        let deployed: DeployReport = xtask(&["deploy"])?;
        let target = cfg
            .target(LocalCredentials::root())
            .context("the local environment has no certificate")?;
        let stage = deployed.deployed(&target)?;
        let rt = crate::target::runtime()?;
        let result = rt.block_on(async {
            let q = deployer::verify::isolation::session_latency(cfg, &stage, SAMPLES).await?;
            let api = api_latency(&target, &stage.api_url).await?;
            anyhow::Ok(report(&q, &api))
        });
        xtask::<TeardownReport>(&["teardown"])?;
        result
    })
}

/// Milliseconds of `GET /metadata`: the warming user's requests, then the measured user's
/// first request (a new session in a warm function) and the next ones.
struct Api {
    first_ms: f64,
    warm_ms: Vec<f64>,
}

async fn api_latency(target: &Target, api: &str) -> Result<Api> {
    use deployer::ops::users::{StageUsers, UsersConfig};
    let users = StageUsers::connect(&UsersConfig {
        target: target.clone(),
        stage: stack::Stage::parse(ENV.stage)?,
    })
    .await?;
    let http = deployer::cloud::aws::http_client(target, std::time::Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut auth = Vec::new();
    for email in ["warm@example.com", "measured@example.com"] {
        let password = "Bench-Scoped-2026-Aa1";
        users.add(email, password).await?;
        let tokens = users.token(email, password).await?;
        auth.push(format!("Bearer {}", tokens.access_token));
    }
    let get = |auth: String| {
        let http = http.clone();
        let url = format!("{api}/metadata");
        async move {
            let t = std::time::Instant::now();
            let resp = http
                .get(&url)
                .header("authorization", auth)
                .send()
                .await
                .context("GET /metadata")?;
            let status = resp.status();
            anyhow::ensure!(status.is_success(), "GET /metadata answered {status}");
            anyhow::Ok(t.elapsed().as_secs_f64() * 1000.0)
        }
    };
    for _ in 0..5 {
        get(auth[0].clone()).await?;
    }
    let first_ms = get(auth[1].clone()).await?;
    let mut warm_ms = Vec::new();
    for _ in 0..SAMPLES {
        warm_ms.push(get(auth[1].clone()).await?);
    }
    Ok(Api { first_ms, warm_ms })
}

fn report(q: &deployer::verify::isolation::SessionLatency, api: &Api) -> Value {
    let (base, cold, warm) = (
        median(&q.execution_role_ms),
        median(&q.cold_ms),
        median(&q.warm_ms),
    );
    let api_warm = median(&api.warm_ms);
    println!(
        "{:<58} {:>10} {:>10}",
        "listing query (local, IAM enforced)", "p50 ms", "p95 ms"
    );
    for (what, values) in [
        ("one session for every user (before)", &q.execution_role_ms),
        (
            "a user's first request: AssumeRole + query (cold)",
            &q.cold_ms,
        ),
        ("a cached user session (warm)", &q.warm_ms),
        ("API GET /metadata, warm session", &api.warm_ms),
    ] {
        println!(
            "{what:<58} {:>10.1} {:>10.1}",
            median(values),
            percentile(values, 0.95)
        );
    }
    println!(
        "{:<58} {:>10.1}",
        "API GET /metadata, a user's first request", api.first_ms
    );
    let added_warm = warm - base;
    println!(
        "added: cold {:.1} ms, warm {added_warm:.1} ms (budget {WARM_BUDGET_MS} ms): {}",
        cold - base,
        if added_warm <= WARM_BUDGET_MS {
            "within"
        } else {
            "OVER"
        }
    );
    json!({
        "samples": SAMPLES,
        "query_p50_ms": { "unscoped": base, "cold_session": cold, "warm_session": warm },
        "query_p95_ms": {
            "unscoped": percentile(&q.execution_role_ms, 0.95),
            "cold_session": percentile(&q.cold_ms, 0.95),
            "warm_session": percentile(&q.warm_ms, 0.95),
        },
        "added_p50_ms": { "cold": cold - base, "warm": added_warm },
        "warm_budget_ms": WARM_BUDGET_MS,
        "warm_within_budget": added_warm <= WARM_BUDGET_MS,
        "api_get_metadata_ms": { "first_request_of_a_user": api.first_ms, "warm_p50": api_warm },
    })
}
