//! The gallery page in a real browser: headless Chromium, driven over the W3C WebDriver
//! protocol (chromedriver), against the stack the end-to-end test deployed. It uploads the cat
//! photograph and the coffee, waits for their label chips, filters by "Cat" (by clicking the
//! chip, and by typing) and sees exactly the cat, uploads a text file and reads the error,
//! uploads an image over 4.5 MB (through the presigned PUT) and sees it labelled, filters by
//! keyboard alone, checks the page fits a phone's width, and that no Content-Security-Policy
//! violation happened.
//! Screenshots go to `target/browser/`.

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
/// How long an upload may take to be labelled, on a loaded 2-core machine.
const LABELS_WITHIN: Duration = Duration::from_secs(120);

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
struct Driver {
    _child: KillOnDrop,
    url: String,
}

impl Driver {
    fn start(log: &Path) -> Result<Self> {
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
struct Session {
    http: reqwest::Client,
    base: String,
}

impl Session {
    async fn new(driver: &Driver, profile: &Path) -> Result<Self> {
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

    async fn goto(&self, url: &str) -> Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(drop)
    }

    async fn find(&self, css: &str) -> Result<String> {
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

    async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let el = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await
        .map(drop)
    }

    async fn click(&self, css: &str) -> Result<()> {
        let el = self.find(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    async fn script(&self, script: &str) -> Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("no screenshot data")?)
            .context("the screenshot is not base64")?;
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("browser: screenshot {}", path.display());
        Ok(())
    }

    async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await
        .map(drop)
    }

    /// Presses and releases one key (a WebDriver key code such as Tab, `\u{E004}`).
    async fn press(&self, key: char) -> Result<()> {
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

    async fn close(self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
    }

    /// Evaluates `script` until `done` accepts its value, or fails after `within`.
    async fn wait_for(
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

/// The cards of the grid: id, status and label chips of each, in page order.
const CARDS: &str = "return Array.from(document.querySelectorAll('#grid li.card')).map(c => ({
    id: c.dataset.id,
    status: c.dataset.status,
    labels: Array.from(c.querySelectorAll('button.chip')).map(b => b.dataset.label),
    thumbnail: (() => { const i = c.querySelector('img'); return !!i && i.complete && i.naturalWidth > 0 && !i.src.startsWith('blob:'); })(),
}));";

fn card<'a>(cards: &'a Value, id: &str) -> Option<&'a Value> {
    cards
        .as_array()?
        .iter()
        .find(|c| c["id"].as_str() == Some(id))
}

fn has_label(card: Option<&Value>, label: &str) -> bool {
    card.and_then(|c| c["labels"].as_array())
        .is_some_and(|l| l.iter().any(|x| x.as_str() == Some(label)))
}

fn ids(cards: &Value) -> Vec<String> {
    cards
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect()
}

/// Uploads `file` through the page's file input; the id of the card that appeared for it.
async fn upload(s: &Session, file: &Path, before: &[String]) -> Result<String> {
    s.type_into("#file", &file.display().to_string()).await?;
    let cards = s
        .wait_for(
            &format!("a card for {}", file.display()),
            Duration::from_secs(30),
            CARDS,
            |v| ids(v).iter().any(|id| !before.contains(id)),
        )
        .await?;
    let id = ids(&cards)
        .into_iter()
        .find(|id| !before.contains(id))
        .context("no new card")?;
    let status = card(&cards, &id)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string();
    // The card comes from the upload's answer; the first poll is 1.5 s later.
    ensure!(
        status == "processing",
        "{} appeared as {status:?}, not processing",
        file.display()
    );
    eprintln!(
        "browser: {} shown at once as {id}, processing",
        file.display()
    );
    Ok(id)
}

/// A uniform gray RGB PNG of `width` × `height`, stored without compression so that it is
/// larger than `POST /upload` takes (4.5 MB) while a valid image of modest dimensions.
fn large_gray_png(width: u32, height: u32) -> Result<Vec<u8>> {
    use std::io::Write;
    let row = 1 + 3 * width as usize;
    let mut raw = vec![128u8; row * height as usize];
    for r in 0..height as usize {
        raw[r * row] = 0; // filter: none
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::none());
    z.write_all(&raw).context("cannot deflate the image")?;
    let idat = z.finish().context("cannot deflate the image")?;
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter set, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &idat), (b"IEND", &[])] {
        let len = u32::try_from(data.len()).context("a PNG chunk over 4 GB")?;
        png.extend_from_slice(&len.to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = deployer::build::zip::crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    Ok(png)
}

/// The whole browser test against the API at `api` (its `GET /` is the page).
pub async fn gallery_test(api: &str) -> Result<()> {
    ensure_installed()?;
    let root = deployer::util::workspace_root();
    let out = root.join("target").join("browser");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let profile = out.join("profile");
    let _ = std::fs::remove_dir_all(&profile);
    let driver = Driver::start(&out.join("chromedriver.log"))?;
    let session = Session::new(&driver, &profile).await?;
    let result = steps(&session, api, &root, &out).await;
    if result.is_err() {
        let _ = session.screenshot(&out.join("failure.png")).await;
    }
    session.close().await;
    drop(driver);
    result
}

async fn steps(s: &Session, api: &str, root: &Path, out: &Path) -> Result<()> {
    let page = format!("{}/", api.trim_end_matches('/'));
    s.goto(&page).await?;
    // Any Content-Security-Policy violation from here on is recorded.
    s.script(WATCH_CSP).await?;
    s.wait_for(
        "the page's first listing",
        Duration::from_secs(30),
        "return document.getElementById('status').textContent;",
        |v| {
            v.as_str()
                .is_some_and(|t| !t.is_empty() && !t.starts_with("Loading"))
        },
    )
    .await
    .context("the page did not run its script (a CSP hash that does not match would do this)")?;

    let images = root.join("fixtures").join("images");
    let before = ids(&s.script(CARDS).await?);
    let cat = upload(s, &images.join("chelsea.png"), &before).await?;
    let mut seen = before.clone();
    seen.push(cat.clone());
    let coffee = upload(s, &images.join("coffee.png"), &seen).await?;
    let started = Instant::now();
    let cards = s
        .wait_for(
            "the cat's Cat chip and the coffee's Coffee chip, with thumbnails",
            LABELS_WITHIN,
            CARDS,
            |v| {
                let (c, k) = (card(v, &cat), card(v, &coffee));
                has_label(c, "Cat")
                    && has_label(k, "Coffee")
                    && [c, k]
                        .iter()
                        .all(|x| x.is_some_and(|x| x["thumbnail"] == true))
            },
        )
        .await?;
    eprintln!(
        "browser: labelled without a reload in {:.1} s: cat {}, coffee {}",
        started.elapsed().as_secs_f64(),
        card(&cards, &cat)
            .map(|c| c["labels"].to_string())
            .unwrap_or_default(),
        card(&cards, &coffee)
            .map(|c| c["labels"].to_string())
            .unwrap_or_default()
    );
    ensure!(
        !has_label(card(&cards, &coffee), "Cat"),
        "the coffee is labelled Cat"
    );
    let first_two: Vec<String> = ids(&cards).into_iter().take(2).collect();
    ensure!(
        first_two == [coffee.clone(), cat.clone()],
        "the newest images come first: {first_two:?}"
    );
    // The label bar counts the new labels once the images are labelled.
    s.wait_for(
        "the Cat chip in the label bar",
        Duration::from_secs(20),
        "return Array.from(document.querySelectorAll('#labels button.chip')).map(b => b.dataset.label);",
        |v| v.as_array().is_some_and(|l| l.iter().any(|x| x == "Cat")),
    )
    .await?;
    let status = s
        .script("return document.getElementById('status').textContent;")
        .await?;
    ensure!(
        status
            .as_str()
            .is_some_and(|t| t.contains("images, newest first")),
        "the status line does not count the images: {status}"
    );
    s.screenshot(&out.join("gallery.png")).await?;

    // Filter by clicking the label, then by typing it (in another case, with Enter).
    let only_the_cat = |v: &Value| ids(v) == [cat.clone()];
    s.click("#labels button.chip[data-label='Cat']").await?;
    s.wait_for(
        "only the cat, after clicking Cat",
        Duration::from_secs(20),
        CARDS,
        only_the_cat,
    )
    .await?;
    s.screenshot(&out.join("filtered.png")).await?;
    s.click("#clear").await?;
    s.wait_for(
        "both images again, after Show all",
        Duration::from_secs(20),
        CARDS,
        |v| card(v, &cat).is_some() && card(v, &coffee).is_some(),
    )
    .await?;
    s.type_into("#label", "CAT\u{E007}").await?;
    s.wait_for(
        "only the cat, after typing CAT",
        Duration::from_secs(20),
        CARDS,
        only_the_cat,
    )
    .await?;
    eprintln!("browser: filtered by Cat (clicked, then typed): exactly the cat");
    s.click("#clear").await?;

    // A text file: the API refuses it, and the page says so in words.
    let text = out.join("notes.txt");
    std::fs::write(&text, "these are notes, not a photograph\n")
        .with_context(|| format!("cannot write {}", text.display()))?;
    s.type_into("#file", &text.display().to_string()).await?;
    let error = s
        .wait_for(
            "the error for the text file",
            Duration::from_secs(20),
            "const e = document.getElementById('error'); return e.hidden ? '' : e.textContent;",
            |v| v.as_str().is_some_and(|t| !t.is_empty()),
        )
        .await?;
    let error = error.as_str().unwrap_or_default().to_string();
    ensure!(
        error.contains("notes.txt") && error.contains("was not uploaded") && error.len() > 40,
        "the error does not say what happened: {error:?}"
    );
    eprintln!("browser: the text file: {error}");
    s.screenshot(&out.join("error.png")).await?;

    // Larger than POST /upload takes: the page asks POST /uploads and PUTs it to the URL.
    let big = out.join("large-gray.png");
    let bytes = large_gray_png(1500, 1200)?;
    ensure!(
        bytes.len() > api_types::MAX_DIRECT_UPLOAD_BYTES,
        "the large image is only {} bytes",
        bytes.len()
    );
    std::fs::write(&big, &bytes).with_context(|| format!("cannot write {}", big.display()))?;
    let before = ids(&s.script(CARDS).await?);
    let large = upload(s, &big, &before).await?;
    let text_of_card = format!(
        "return (Array.from(document.querySelectorAll('#grid li.card')).find(c => c.dataset.id === '{large}') || {{}}).textContent || '';"
    );
    let shown = s
        .wait_for(
            "the large image, labelled",
            LABELS_WITHIN,
            &text_of_card,
            |v| v.as_str().is_some_and(|t| t.contains("Labelled")),
        )
        .await?;
    let shown = shown.as_str().unwrap_or_default();
    let cards = s.script(CARDS).await?;
    let chips = card(&cards, &large)
        .and_then(|c| c["labels"].as_array())
        .map_or(0, Vec::len);
    ensure!(
        chips > 0 || shown.contains("No labels above 55 %"),
        "a labelled image with no chips must say so: {shown:?}"
    );
    eprintln!(
        "browser: {} bytes through the presigned PUT, labelled: {}",
        bytes.len(),
        if chips > 0 {
            format!("{chips} chips")
        } else {
            "\"No labels above 55 %\"".to_string()
        }
    );

    // By keyboard alone: Tab from the top reaches the file picker, the filter and the label
    // bar's chips, each with a visible focus ring; Enter on the Cat chip filters.
    // A fresh load, so that Tab starts at the top of the page.
    no_violations(s).await?;
    s.goto(&page).await?;
    s.wait_for(
        "the page's listing after a reload",
        Duration::from_secs(30),
        "return document.getElementById('status').textContent;",
        |v| v.as_str().is_some_and(|t| t.contains("newest first")),
    )
    .await?;
    s.script(WATCH_CSP).await?;
    let focused = "const e = document.activeElement; return {
        name: e.id ? '#' + e.id : e.tagName.toLowerCase() + (e.dataset.label ? '[' + e.dataset.label + ']' : ''),
        in_label_bar: !!e.closest('#labels'),
        ring: getComputedStyle(e).outlineStyle !== 'none',
    };";
    let mut path = Vec::new();
    let mut on_cat = false;
    for _ in 0..40 {
        s.press('\u{E004}').await?;
        let f = s.script(focused).await?;
        let name = f["name"].as_str().unwrap_or_default().to_string();
        ensure!(
            f["ring"] == true,
            "{name} has focus but no visible focus ring"
        );
        path.push(name.clone());
        if f["in_label_bar"] == true && name == "button[Cat]" {
            on_cat = true;
            break;
        }
    }
    ensure!(on_cat, "Tab never reached the Cat chip: {path:?}");
    for need in ["#file", "#label"] {
        ensure!(path.iter().any(|p| p == need), "Tab skips {need}: {path:?}");
    }
    s.press('\u{E007}').await?;
    s.wait_for(
        "only the cat, after Enter on the Cat chip",
        Duration::from_secs(20),
        CARDS,
        only_the_cat,
    )
    .await?;
    eprintln!(
        "browser: by keyboard: {} Tab presses to the Cat chip ({}), Enter filters",
        path.len(),
        path.join(" > ")
    );

    // A phone's width: nothing wider than the screen.
    s.resize(390, 844).await?;
    let overflow = s
        .script("return document.documentElement.scrollWidth - window.innerWidth;")
        .await?;
    ensure!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the page is {overflow} px wider than a 390 px phone"
    );
    s.screenshot(&out.join("phone.png")).await?;

    no_violations(s).await
}

/// Records every Content-Security-Policy violation of the page from now on.
const WATCH_CSP: &str = "window.__violations = []; document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI)); return true;";

async fn no_violations(s: &Session) -> Result<()> {
    let violations = s.script("return window.__violations;").await?;
    ensure!(
        violations.as_array().is_some_and(Vec::is_empty),
        "Content-Security-Policy violations: {violations}"
    );
    Ok(())
}
