//! A small W3C WebDriver client over the `reqwest` the tool already has: chromedriver on a
//! free port of 127.0.0.1, stopped when dropped, and one headless Chromium session.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use deployer::util::KillOnDrop;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium and chromedriver (Debian's `chromium` and `chromium-driver`), installed with
/// apt-get when missing and the caller may.
pub fn ensure_installed() -> Result<()> {
    if Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| o.stdout.trim_ascii() == b"0");
    if !root || which("apt-get").is_none() {
        bail!(
            "the browser test needs {CHROMIUM} and {CHROMEDRIVER}: install Debian's `chromium` and `chromium-driver` packages (apt-get install chromium chromium-driver), or run with --no-e2e"
        );
    }
    eprintln!("browser: installing chromium and chromium-driver with apt-get (once)");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "chromium", "chromium-driver"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?;
        ensure!(
            status.success(),
            "apt-get {} failed ({status})",
            args.join(" ")
        );
    }
    ensure!(
        Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file(),
        "apt-get installed chromium, but {CHROMIUM} or {CHROMEDRIVER} is not there"
    );
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// chromedriver on a free port of 127.0.0.1, stopped when dropped.
pub struct Driver {
    _child: KillOnDrop,
    url: String,
}

impl Driver {
    pub fn start(log: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free port for chromedriver")?
            .port();
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {CHROMEDRIVER}"))?;
        Ok(Self {
            _child: KillOnDrop(child),
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

/// One WebDriver session.
pub struct Session {
    http: reqwest::Client,
    base: String,
}

impl Session {
    pub async fn new(driver: &Driver, profile: &Path) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build an HTTP client")?;
        // chromedriver answers once it listens.
        let started = Instant::now();
        loop {
            let ready = http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on {} within 20 s",
                driver.url
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The local environment's certificate is its own CA's.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let resp = send(
            &http,
            reqwest::Method::POST,
            &format!("{}/session", driver.url),
            Some(caps),
        )
        .await?;
        let id = resp["sessionId"]
            .as_str()
            .context("chromedriver returned no session id")?;
        Ok(Self {
            http,
            base: format!("{}/session/{id}", driver.url),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        send(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(drop)
    }

    pub async fn find(&self, css: &str) -> Result<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .with_context(|| format!("no element {css}"))?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no element reference for {css}: {v}"))
    }

    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let el = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await
        .map(drop)
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        let el = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    pub async fn script(&self, script: &str) -> Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("no screenshot data")?)
            .context("the screenshot is not base64")?;
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("browser: screenshot {}", path.display());
        Ok(())
    }

    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await
        .map(drop)
    }

    /// Presses and releases one key (a WebDriver key code such as Tab, `\u{E004}`).
    pub async fn press(&self, key: char) -> Result<()> {
        let key = key.to_string();
        self.call(
            reqwest::Method::POST,
            "/actions",
            Some(
                json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                    {"type": "keyDown", "value": key},
                    {"type": "keyUp", "value": key},
                ]}]}),
            ),
        )
        .await
        .map(drop)
    }

    pub async fn close(self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
    }

    /// Evaluates `script` until `done` accepts its value, or fails after `within`.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        script: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let started = Instant::now();
        loop {
            let v = self.script(script).await?;
            if done(&v) {
                return Ok(v);
            }
            if started.elapsed() > within {
                bail!("{what}: not within {} s; last seen {v}", within.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// A WebDriver command; its `value`, or the error it names.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut req = http.request(method.clone(), url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("WebDriver {method} {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "WebDriver {method} {url}: {status} {} {}",
            v["value"]["error"].as_str().unwrap_or_default(),
            v["value"]["message"]
                .as_str()
                .unwrap_or(&text)
                .lines()
                .next()
                .unwrap_or_default()
        );
    }
    Ok(v["value"].clone())
}
