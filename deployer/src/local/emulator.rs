//! The local environment: MiniStack (the AWS emulator, pinned in `tools/local-requirements.txt`)
//! and the `detect-labels` service, both bound to 127.0.0.1, run in the background with their
//! pids, logs and state under `target/local/`, health-checked before use.
//!
//! MiniStack always runs with IAM enforcement (`AUTH=true`) and on TLS with a certificate this
//! module generates (`tls`): every call is authorized as its caller, functions run as their
//! own execution roles, and bucket policies see `aws:SecureTransport` as they do on AWS.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cloud::aws::{LocalCredentials, ROOT_KEY, Target};
use crate::local::model::{self, ModelError};
use crate::local::tls::{self, TlsError, TlsFiles};
use crate::progress::Progress;
use crate::tools::pyenv::{Venv, VenvError};
use crate::util::{KillOnDrop, workspace_root};

pub const DEFAULT_PORT: u16 = 4566;
/// The emulator's root access key and secret: not checked, allowed everything.
pub const DEFAULT_LABELS_PORT: u16 = 4599;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// MiniStack's port on 127.0.0.1.
    pub port: u16,
    /// The label service's port on 127.0.0.1.
    pub labels_port: u16,
    /// Where pids, logs and state live.
    pub dir: PathBuf,
    /// A `detect-labels` binary to run instead of building one (the test command passes the
    /// one its test build just made).
    pub labels_binary: Option<PathBuf>,
    /// The label service as a quota: at most this many DetectLabels calls per second (0: no
    /// limit). `None` keeps a running service's rate, and starts one without a limit.
    pub labels_tps: Option<u32>,
    /// What the label service answers with. `None` keeps a running service's answer, and
    /// starts one with the model.
    pub labels_answer: Option<LabelsAnswer>,
}

/// What the label service answers a DetectLabels call with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelsAnswer {
    /// The model's labels.
    Model,
    /// Stub mode, for scale runs: one fixed label named "Stub (not the model)", after this
    /// many milliseconds; the model is not run.
    Stub { latency_ms: u64 },
}

impl std::str::FromStr for LabelsAnswer {
    type Err = String;
    /// `off` (the model), or the stub's latency in milliseconds.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Model);
        }
        s.parse()
            .map(|latency_ms| Self::Stub { latency_ms })
            .map_err(|_| format!("`{s}` is neither a number of milliseconds nor `off`"))
    }
}

impl std::fmt::Display for LabelsAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Model => write!(f, "the model's labels"),
            Self::Stub { latency_ms } => {
                write!(f, "a stub label (not the model) after {latency_ms} ms")
            }
        }
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self::for_ports(DEFAULT_PORT, DEFAULT_LABELS_PORT)
    }
}

impl LocalConfig {
    /// A local environment on these ports, with its files under `target/local/<port>/` so
    /// environments on different ports never share state.
    pub fn for_ports(port: u16, labels_port: u16) -> Self {
        Self {
            port,
            labels_port,
            dir: workspace_root()
                .join("target")
                .join("local")
                .join(port.to_string()),
            labels_binary: None,
            labels_tps: None,
            labels_answer: None,
        }
    }

    /// The emulator's endpoint: TLS, so that `aws:SecureTransport` holds as on AWS.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    /// The certificate the emulator serves, which every local client trusts.
    pub fn tls(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.dir.join("tls"))
    }
    /// The emulator as a deploy target, called as `credentials` (its root, or one of its
    /// IAM users), trusting its certificate.
    pub fn target(&self, credentials: LocalCredentials) -> Result<Target, TlsError> {
        Ok(Target::Local {
            endpoint: self.endpoint(),
            certificate: self.tls().cert_pem()?,
            credentials,
        })
    }
    pub fn labels_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.labels_port)
    }
    fn pid_file(&self, service: Service) -> PathBuf {
        self.dir.join(format!("{}.pid", service.name()))
    }
    fn log_file(&self, service: Service) -> PathBuf {
        self.dir.join(format!("{}.log", service.name()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ministack,
    Labels,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Ministack => "ministack",
            Service::Labels => "detect-labels",
        }
    }
}

#[derive(Debug, Error)]
pub enum LocalError {
    #[error(transparent)]
    Venv(#[from] VenvError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Fidelity(#[from] crate::local::fidelity::FidelityError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {service} ({program}): {source}")]
    Spawn {
        service: &'static str,
        program: String,
        source: std::io::Error,
    },
    #[error(
        "cannot build the label service (`cargo build -p local-labels --bin detect-labels`): {0}"
    )]
    BuildLabels(String),
    #[error(
        "port {port} on 127.0.0.1 is taken by something that is not a healthy {service}; stop it or choose another port"
    )]
    PortTaken { service: &'static str, port: u16 },
    #[error("{service} did not become healthy within {waited_s} s; last lines of {log}:\n{tail}")]
    Unhealthy {
        service: &'static str,
        waited_s: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("{service} (pid {pid}) did not stop")]
    Stuck { service: &'static str, pid: u32 },
    #[error("{service} is running: stop the local environment first (`cargo xtask local down`)")]
    Running { service: &'static str },
}

/// One service's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub url: String,
    pub pid: Option<u32>,
    pub healthy: bool,
    pub log: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalStatus {
    pub services: Vec<ServiceStatus>,
    /// Whether the emulator said it enforces IAM (its health answer's `auth`), as read, not
    /// as configured; `false` when it is not running.
    pub iam_enforced: bool,
    /// The certificate local clients trust (the emulator serves only TLS).
    pub certificate: PathBuf,
}

impl LocalStatus {
    /// Both services answer, and the emulator enforces IAM: the local environment as it must be.
    pub fn all_healthy(&self) -> bool {
        self.iam_enforced && self.services.iter().all(|s| s.healthy)
    }
}

/// What the emulator's health endpoint says, over TLS: `None` when it does not answer;
/// otherwise whether it enforces IAM (its `auth` field).
fn ministack_health(cfg: &LocalConfig) -> Option<bool> {
    let (status, body) = tls::get(cfg.port, "/_ministack/health", &cfg.tls().cert).ok()?;
    if status != 200 {
        return None;
    }
    let health: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(health["auth"] == "enabled")
}

fn healthy(cfg: &LocalConfig, s: Service) -> bool {
    match s {
        // Only an emulator that enforces IAM counts as the local environment.
        Service::Ministack => ministack_health(cfg) == Some(true),
        Service::Labels => labels_healthy(cfg.labels_port),
    }
}

/// The label service answers its health check (short timeouts: a status never hangs).
fn labels_healthy(port: u16) -> bool {
    matches!(tls::get_plain(port, "/health"), Ok((200, _)))
}

/// The running label service's rate (0: no limit) and answer, from its `GET /stats`.
fn labels_settings(cfg: &LocalConfig) -> Option<(u32, LabelsAnswer)> {
    let v = labels_stats(cfg)?;
    let tps = v["tps"]
        .as_u64()
        .and_then(|q| u32::try_from(q).ok())
        .unwrap_or(0);
    let answer = match v["stub_latency_ms"].as_u64() {
        Some(latency_ms) => LabelsAnswer::Stub { latency_ms },
        None => LabelsAnswer::Model,
    };
    Some((tps, answer))
}

/// Stops the label service alone (an outage of the local DetectLabels); `up` starts it again
/// with `cfg`'s settings. Whether it was running.
pub fn stop_labels(cfg: &LocalConfig) -> Result<bool, LocalError> {
    stop(cfg, Service::Labels)
}

/// The running label service's `GET /stats`, as JSON.
pub fn labels_stats(cfg: &LocalConfig) -> Option<serde_json::Value> {
    let (status, body) = tls::get_plain(cfg.labels_port, "/stats").ok()?;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// The running label service's rate in calls a second, when it has one.
pub fn labels_rate(cfg: &LocalConfig) -> Option<u32> {
    labels_settings(cfg).map(|(tps, _)| tps).filter(|q| *q > 0)
}

/// Whether the running label service has the rate and answer `cfg` asks for.
pub fn labels_as_asked(cfg: &LocalConfig) -> bool {
    labels_changes(cfg).is_empty()
}

/// What differs between the running label service and what `cfg` asks for (nothing, when it
/// asks for nothing).
fn labels_changes(cfg: &LocalConfig) -> Vec<String> {
    let Some((tps, answer)) = labels_settings(cfg) else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    if let Some(wanted) = cfg.labels_tps.filter(|q| *q != tps) {
        changes.push(match wanted {
            0 => "its rate changes to no limit".to_string(),
            q => format!("its rate changes to {q} calls per second"),
        });
    }
    if let Some(wanted) = cfg.labels_answer.filter(|a| *a != answer) {
        changes.push(format!("it now answers with {wanted}"));
    }
    changes
}

fn port_open(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The recorded pid, if that process is still alive and is the service.
fn live_pid(cfg: &LocalConfig, s: Service) -> Option<u32> {
    let pid: u32 = fs::read_to_string(cfg.pid_file(s))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&cmdline);
    text.contains(s.name()).then_some(pid)
}

pub fn status(cfg: &LocalConfig) -> LocalStatus {
    // One health request to the emulator answers both "is it up" and "does it enforce".
    let emulator = ministack_health(cfg);
    let services = [Service::Ministack, Service::Labels]
        .into_iter()
        .map(|s| ServiceStatus {
            name: s.name().to_string(),
            url: match s {
                Service::Ministack => cfg.endpoint(),
                Service::Labels => cfg.labels_endpoint(),
            },
            pid: live_pid(cfg, s),
            healthy: match s {
                Service::Ministack => emulator.is_some(),
                Service::Labels => labels_healthy(cfg.labels_port),
            },
            log: cfg.log_file(s),
        })
        .collect();
    LocalStatus {
        services,
        iam_enforced: emulator == Some(true),
        certificate: cfg.tls().cert,
    }
}

/// Starts whatever is not running yet and waits until both services are healthy.
/// `progress` hears about each step.
pub fn up(cfg: &LocalConfig, progress: &dyn Progress) -> Result<LocalStatus, LocalError> {
    fs::create_dir_all(&cfg.dir).map_err(|source| LocalError::Write {
        path: cfg.dir.clone(),
        source,
    })?;
    let tls = cfg.tls();
    tls.ensure()?;
    // The label service's first build is minutes of CPU, while installing the emulator and the
    // model mostly waits on downloads and disks: start it first and let both run.
    let mut labels_build = None;
    if cfg.labels_binary.is_none() && !healthy(cfg, Service::Labels) {
        progress.step(
            "building the label service (detect-labels) in the background; the first build takes a few minutes",
        );
        labels_build = Some(LabelsBuild::start()?);
    }
    if !healthy(cfg, Service::Ministack) {
        start_ministack(cfg, &tls, progress)?;
    }
    let changes = labels_changes(cfg);
    if healthy(cfg, Service::Labels) && !changes.is_empty() {
        progress.step(&format!("restarting detect-labels: {}", changes.join("; ")));
        stop(cfg, Service::Labels)?;
    }
    if !healthy(cfg, Service::Labels) {
        start_labels(cfg, &tls, labels_build, progress)?;
    }
    Ok(status(cfg))
}

/// Starts MiniStack with IAM enforced over TLS, replacing one of ours that does not answer
/// so, and waits until it is healthy.
fn start_ministack(
    cfg: &LocalConfig,
    tls: &TlsFiles,
    progress: &dyn Progress,
) -> Result<(), LocalError> {
    if let Some(pid) = live_pid(cfg, Service::Ministack) {
        // Ours, but not answering as it must (started without TLS or enforcement by an
        // older version, or stuck): replace it.
        progress.step(&format!(
            "restarting ministack (pid {pid}): it does not answer over TLS with IAM enforcement"
        ));
        stop(cfg, Service::Ministack)?;
    } else if port_open(cfg.port) {
        return Err(LocalError::PortTaken {
            service: Service::Ministack.name(),
            port: cfg.port,
        });
    }
    let venv = Venv::ensure("local", progress)?;
    crate::local::fidelity::apply(venv.dir())?;
    progress.step(&format!(
        "starting ministack on {} (IAM enforced, TLS)",
        cfg.endpoint()
    ));
    let state = cfg.dir.join("state");
    let mut cmd = Command::new(venv.bin("ministack"));
    cmd.env("BIND_HOST", "127.0.0.1")
        .env("GATEWAY_PORT", cfg.port.to_string())
        // Every request is authorized as its caller; functions get sessions of their
        // own execution roles.
        .env("AUTH", "true")
        // TLS with our certificate.
        .env("USE_SSL", "1")
        .env("MINISTACK_SSL_CERT", &tls.cert)
        .env("MINISTACK_SSL_KEY", &tls.key)
        // The functions it runs inherit these: they call back into it by IP (a host
        // name would make the SDK try virtual-hosted S3 buckets), over TLS, trusting
        // exactly its certificate.
        .env("AWS_ENDPOINT_URL", cfg.endpoint())
        .env("SSL_CERT_FILE", &tls.cert)
        // What it holds survives `local down`/`local up`: service state (saved when it
        // stops) and object bodies (written as they arrive), both under this port's own
        // directory, never shared with another environment.
        .env("PERSIST_STATE", "1")
        .env("STATE_DIR", &state)
        .env("S3_PERSIST", "1")
        .env("S3_DATA_DIR", cfg.dir.join("s3"))
        .env("LOG_LEVEL", "WARNING");
    // The emulator's root identity is whatever its environment says: the dummy one,
    // never the caller's real credentials.
    without_caller_credentials(&mut cmd, std::env::vars_os());
    spawn(cfg, Service::Ministack, cmd)?;
    wait_healthy(cfg, Service::Ministack, Duration::from_secs(60))
}

/// Starts the label service (finishing its build, and fetching the model, first) and waits
/// until it is healthy.
fn start_labels(
    cfg: &LocalConfig,
    tls: &TlsFiles,
    build: Option<LabelsBuild>,
    progress: &dyn Progress,
) -> Result<(), LocalError> {
    if port_open(cfg.labels_port) && live_pid(cfg, Service::Labels).is_none() {
        return Err(LocalError::PortTaken {
            service: Service::Labels.name(),
            port: cfg.labels_port,
        });
    }
    let model_dir = model::ensure(progress)?;
    let binary = match (&cfg.labels_binary, build) {
        (Some(b), _) => b.clone(),
        (None, Some(build)) => build.finish(progress)?,
        // It stopped answering while the emulator started: build (a no-op when
        // current) and start it again.
        (None, None) => LabelsBuild::start()?.finish(progress)?,
    };
    progress.step(&format!(
        "starting detect-labels on {}",
        cfg.labels_endpoint()
    ));
    let mut cmd = Command::new(binary);
    cmd.arg("--port")
        .arg(cfg.labels_port.to_string())
        .arg("--model-dir")
        .arg(&model_dir)
        .arg("--endpoint")
        .arg(cfg.endpoint())
        .arg("--ca-file")
        .arg(&tls.cert)
        .arg("--tps")
        .arg(cfg.labels_tps.unwrap_or(0).to_string());
    if let Some(LabelsAnswer::Stub { latency_ms }) = cfg.labels_answer {
        cmd.arg("--stub-latency-ms").arg(latency_ms.to_string());
    }
    // The service's own identity (as Rekognition has one) is the emulator's dummy root:
    // it only asks the emulator who signed a request; S3 is read with the caller's
    // credentials.
    without_caller_credentials(&mut cmd, std::env::vars_os());
    spawn(cfg, Service::Labels, cmd)?;
    wait_healthy(cfg, Service::Labels, Duration::from_secs(60))
}

/// Keeps the caller's AWS identity out of a local service: every `AWS_*` variable of
/// `parent` is removed (keys, session tokens, profiles, web identity, container and SSO
/// settings), the shared config and credentials files are pointed at nothing, and the
/// emulator's dummy root key is set. Variables the command sets itself (`AWS_ENDPOINT_URL`)
/// stay as set.
fn without_caller_credentials(
    cmd: &mut Command,
    parent: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) {
    let own: Vec<std::ffi::OsString> = cmd
        .get_envs()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.to_os_string())
        .collect();
    for (key, _) in parent {
        if key.to_string_lossy().starts_with("AWS_") && !own.contains(&key) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("AWS_ACCESS_KEY_ID", ROOT_KEY)
        .env("AWS_SECRET_ACCESS_KEY", ROOT_KEY)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
}

/// `cargo build` of the label service, running as a child process. Dropped unfinished (when
/// starting the environment fails on the way), the build is stopped.
#[derive(Debug)]
struct LabelsBuild {
    child: KillOnDrop,
    /// Counts the units cargo reports; ends with its stdout.
    units: Option<std::thread::JoinHandle<usize>>,
    /// Cargo's messages (stderr), kept for a failure report.
    messages: Option<std::thread::JoinHandle<String>>,
}

impl LabelsBuild {
    fn start() -> Result<Self, LocalError> {
        let mut child = crate::tools::cmd::cargo()
            .current_dir(workspace_root())
            .args([
                "build",
                "--package",
                "local-labels",
                "--bin",
                "detect-labels",
            ])
            .args(["--message-format", "json-render-diagnostics"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LocalError::BuildLabels(format!("cannot start cargo: {e}")))?;
        let stdout = child.stdout.take();
        let units = std::thread::spawn(move || {
            let Some(out) = stdout else { return 0 };
            std::io::BufRead::lines(std::io::BufReader::new(out))
                .map_while(Result::ok)
                .filter(|l| {
                    l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"fresh\":false")
                })
                .count()
        });
        let messages = crate::tools::cmd::collect(child.stderr.take());
        Ok(LabelsBuild {
            child: KillOnDrop(child),
            units: Some(units),
            messages: Some(messages),
        })
    }

    /// Waits for the build: the binary, or cargo's last messages when it failed.
    fn finish(mut self, progress: &dyn Progress) -> Result<PathBuf, LocalError> {
        let started = Instant::now();
        progress.step("waiting for the label service's build");
        let status = self
            .child
            .wait()
            .map_err(|e| LocalError::BuildLabels(e.to_string()))?;
        let units = self.units.take().and_then(|t| t.join().ok()).unwrap_or(0);
        let messages = self
            .messages
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        if !status.success() {
            return Err(LocalError::BuildLabels(format!(
                "cargo exited with {status}:\n{}",
                crate::tools::cmd::last_lines(&messages, 40)
            )));
        }
        progress.step(&format!(
            "label service built ({units} units compiled; waited {:.0} s for it)",
            started.elapsed().as_secs_f64()
        ));
        Ok(labels_binary("debug"))
    }
}

/// Where cargo puts the label service's binary for `profile` (`debug` or `release`).
pub fn labels_binary(profile: &str) -> PathBuf {
    workspace_root()
        .join("target")
        .join(profile)
        .join("detect-labels")
}

/// Starts a service in its own process group (so stopping it also stops what it started,
/// such as MiniStack's Lambda processes), detached from our terminal, logging to a file.
fn spawn(cfg: &LocalConfig, s: Service, mut cmd: Command) -> Result<(), LocalError> {
    let log_path = cfg.log_file(s);
    let log = fs::File::create(&log_path).map_err(|source| LocalError::Write {
        path: log_path.clone(),
        source,
    })?;
    let err = log.try_clone().map_err(|source| LocalError::Write {
        path: log_path.clone(),
        source,
    })?;
    let child = cmd
        .current_dir(&cfg.dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| LocalError::Spawn {
            service: s.name(),
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    let pid_path = cfg.pid_file(s);
    fs::write(&pid_path, child.id().to_string()).map_err(|source| LocalError::Write {
        path: pid_path,
        source,
    })?;
    Ok(())
}

/// Whether a process exists and has not exited (a child that died stays a zombie until we
/// exit, so the state letter matters).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(after != 'Z' && after != 'X')
        })
        .unwrap_or(false)
}

fn wait_healthy(cfg: &LocalConfig, s: Service, timeout: Duration) -> Result<(), LocalError> {
    let start = Instant::now();
    let pid: Option<u32> = fs::read_to_string(cfg.pid_file(s))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    loop {
        if healthy(cfg, s) {
            return Ok(());
        }
        let dead = !pid.is_some_and(alive);
        if dead || start.elapsed() >= timeout {
            let log = cfg.log_file(s);
            return Err(LocalError::Unhealthy {
                service: s.name(),
                waited_s: start.elapsed().as_secs(),
                tail: tail(&log, 20),
                log,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Stops both services (SIGTERM to each process group, then SIGKILL after a grace period).
/// Returns the names of the services that were running. Stopping nothing is fine.
pub fn down(cfg: &LocalConfig) -> Result<Vec<String>, LocalError> {
    let mut stopped = Vec::new();
    for s in [Service::Labels, Service::Ministack] {
        if stop(cfg, s)? {
            stopped.push(s.name().to_string());
        }
    }
    Ok(stopped)
}

/// Deletes what a stopped environment holds (the emulator's saved state and object bodies);
/// its certificate, logs and tools stay. Refuses while a service runs.
pub fn wipe(cfg: &LocalConfig) -> Result<(), LocalError> {
    for s in [Service::Ministack, Service::Labels] {
        if live_pid(cfg, s).is_some() {
            return Err(LocalError::Running { service: s.name() });
        }
    }
    for dir in [cfg.dir.join("state"), cfg.dir.join("s3")] {
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LocalError::Write { path: dir, source }),
        }
    }
    Ok(())
}

/// How long a service has to stop (and the emulator to save what it holds) before it is
/// killed, losing what changed since it started.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Stops one service if it runs; whether it did.
fn stop(cfg: &LocalConfig, s: Service) -> Result<bool, LocalError> {
    let was_running = match live_pid(cfg, s) {
        None => false,
        Some(pid) => {
            signal(pid, "TERM");
            let start = Instant::now();
            while live_pid(cfg, s).is_some() && start.elapsed() < STOP_GRACE {
                std::thread::sleep(Duration::from_millis(100));
            }
            if live_pid(cfg, s).is_some() {
                signal(pid, "KILL");
                std::thread::sleep(Duration::from_millis(300));
                if live_pid(cfg, s).is_some() {
                    return Err(LocalError::Stuck {
                        service: s.name(),
                        pid,
                    });
                }
            }
            true
        }
    };
    let _ = fs::remove_file(cfg.pid_file(s));
    Ok(was_running)
}

fn signal(pid: u32, sig: &str) {
    // The whole group first (the service and its children), then the process itself.
    let _ = Command::new("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_services_never_get_the_callers_aws_identity() {
        let parent = [
            ("AWS_ACCESS_KEY_ID", "AKIAREALREALREAL"),
            ("AWS_SECRET_ACCESS_KEY", "real-secret"),
            ("AWS_SESSION_TOKEN", "real-token"),
            ("AWS_SECURITY_TOKEN", "real-token"),
            ("AWS_PROFILE", "prod"),
            ("AWS_DEFAULT_PROFILE", "prod"),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ci"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            ),
            ("AWS_CONFIG_FILE", "/home/me/.aws/config"),
            ("AWS_ENDPOINT_URL", "https://real.example"),
            ("HOME", "/home/me"),
        ]
        .map(|(k, v)| (std::ffi::OsString::from(k), std::ffi::OsString::from(v)));
        let mut cmd = std::process::Command::new("ministack");
        cmd.env("AWS_ENDPOINT_URL", "https://127.0.0.1:4566");
        super::without_caller_credentials(&mut cmd, parent.clone().into_iter());
        let env: std::collections::BTreeMap<String, Option<String>> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        for (k, v) in &parent {
            let k = k.to_string_lossy();
            let v = v.to_string_lossy().into_owned();
            if k.starts_with("AWS_") {
                assert_ne!(env.get(k.as_ref()), None, "{k} is inherited");
                assert_ne!(
                    env.get(k.as_ref()),
                    Some(&Some(v)),
                    "{k} passes the caller's value"
                );
            }
        }
        assert_eq!(env["AWS_ACCESS_KEY_ID"].as_deref(), Some(super::ROOT_KEY));
        assert_eq!(
            env["AWS_ENDPOINT_URL"].as_deref(),
            Some("https://127.0.0.1:4566")
        );
        assert_eq!(
            env["AWS_SHARED_CREDENTIALS_FILE"].as_deref(),
            Some("/dev/null")
        );
        assert!(
            !env.contains_key("HOME"),
            "unrelated variables are left alone"
        );
    }

    use super::*;

    #[test]
    fn nothing_running_is_reported_as_such() {
        let dir = std::env::temp_dir().join(format!("local-status-{}", std::process::id()));
        let cfg = LocalConfig {
            // Ports nothing listens on in a test run.
            port: 1,
            labels_port: 2,
            dir: dir.clone(),
            labels_binary: None,
            labels_tps: None,
            labels_answer: None,
        };
        let st = status(&cfg);
        assert!(st.services.iter().all(|s| s.pid.is_none() && !s.healthy));
        assert!(!st.all_healthy());
        assert!(!st.iam_enforced);
        assert_eq!(st.services.len(), 2);
        // Stopping nothing is not an error.
        assert_eq!(down(&cfg).map_err(|e| e.to_string()), Ok(vec![]));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_stale_pid_file_is_not_a_running_service() {
        let dir = std::env::temp_dir().join(format!("local-stale-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let cfg = LocalConfig {
            port: 1,
            labels_port: 2,
            dir: dir.clone(),
            labels_binary: None,
            labels_tps: None,
            labels_answer: None,
        };
        // Our own pid is alive but is not ministack.
        fs::write(
            cfg.pid_file(Service::Ministack),
            std::process::id().to_string(),
        )
        .unwrap();
        assert_eq!(live_pid(&cfg, Service::Ministack), None);
        let _ = fs::remove_dir_all(dir);
    }
}
