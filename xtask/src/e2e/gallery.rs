//! The gallery page in a real browser: headless Chromium, driven over the W3C WebDriver
//! protocol (chromedriver), against the stack the end-to-end test deployed. A wrong password
//! is refused in words; user A signs in (SRP, from the page), uploads the cat photograph and
//! the coffee, waits for their label chips and thumbnails (fetched with the token), filters by
//! "Cat" (by clicking the chip, and by typing) and sees exactly the cat, uploads a text file
//! and reads the error, uploads an image over 4.5 MB (through the presigned PUT) and sees it
//! labelled, filters by keyboard alone, checks the page fits a phone's width; then signs out,
//! and user B signs in, sees none of A's images, uploads one and deletes it. No
//! Content-Security-Policy violation may happen.
//! Screenshots go to `target/browser/`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::webdriver::{Driver, Session, ensure_installed};

/// How long an upload may take to be labelled, on a loaded 2-core machine.
const LABELS_WITHIN: Duration = Duration::from_secs(120);

/// The page's status line.
const STATUS: &str = "return document.getElementById('status').textContent;";

/// The cards of the grid: id, status and label chips of each, in page order.
const CARDS: &str = "return Array.from(document.querySelectorAll('#grid li.card')).map(c => ({
    id: c.dataset.id,
    status: c.dataset.status,
    labels: Array.from(c.querySelectorAll('button.chip')).map(b => b.dataset.label),
    thumbnail: (() => { const i = c.querySelector('img'); return c.dataset.status === 'labeled' && !!i && i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:'); })(),
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

/// Two users of the stage and the password they share.
#[derive(Debug, Clone)]
pub struct Users {
    pub a: String,
    pub b: String,
    pub password: String,
}

/// The whole browser test against the API at `api` (its `GET /` is the page).
pub async fn gallery_test(api: &str, users: &Users) -> Result<()> {
    ensure_installed()?;
    let root = deployer::util::workspace_root();
    let out = root.join("target").join("browser");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let profile = out.join("profile");
    let _ = std::fs::remove_dir_all(&profile);
    let driver = Driver::start(&out.join("chromedriver.log"))?;
    let session = Session::new(&driver, &profile).await?;
    let result = steps(&session, api, users, (&root, &out)).await;
    if result.is_err() {
        let _ = session.screenshot(&out.join("failure.png")).await;
    }
    session.close().await;
    drop(driver);
    result
}

/// Opens the page: its sign-in form, with the app hidden until someone signs in.
async fn open(s: &Session, page: &str) -> Result<()> {
    s.goto(page).await?;
    // Any Content-Security-Policy violation from here on is recorded.
    s.script(WATCH_CSP).await?;
    let shown = s
        .script("return [document.getElementById('signin').hidden, document.getElementById('app').hidden];")
        .await?;
    ensure!(
        shown == serde_json::json!([false, true]),
        "before sign-in the page shows [sign-in hidden, app hidden] = {shown}"
    );
    Ok(())
}

/// The text of the sign-in error box, empty while it is hidden.
const SIGN_IN_ERROR: &str =
    "const e = document.getElementById('signin-error'); return e.hidden ? '' : e.textContent;";

/// A wrong password: refused, and the page says so in words.
async fn wrong_password(s: &Session, email: &str) -> Result<()> {
    s.type_into("#email", email).await?;
    s.type_into("#password", "Not-the-password-1").await?;
    s.click("#signin-button").await?;
    let error = s
        .wait_for(
            "the error for a wrong password",
            Duration::from_secs(30),
            SIGN_IN_ERROR,
            |v| v.as_str().is_some_and(|t| !t.is_empty()),
        )
        .await?;
    ensure!(
        error.as_str() == Some("Wrong email or password."),
        "a wrong password shows {error}"
    );
    eprintln!("browser: a wrong password: {error}");
    Ok(())
}

/// Signs in through the form and waits for the first listing (which needs the token).
async fn sign_in(s: &Session, email: &str, password: &str) -> Result<()> {
    s.script("document.getElementById('email').value = ''; return true;")
        .await?;
    s.type_into("#email", email).await?;
    s.type_into("#password", password).await?;
    s.click("#signin-button").await?;
    s.wait_for(
        &format!("{email} signed in"),
        Duration::from_secs(30),
        "return document.getElementById('app').hidden ? document.getElementById('signin-error').textContent : 'in';",
        |v| v.as_str() == Some("in"),
    )
    .await?;
    s.wait_for(
        "the page's first listing",
        Duration::from_secs(30),
        STATUS,
        |v| {
            v.as_str()
                .is_some_and(|t| !t.is_empty() && !t.starts_with("Loading"))
        },
    )
    .await
    .context("the page did not list the images after sign-in")?;
    Ok(())
}

/// Uploads the cat and the coffee and waits for their chips and thumbnails without a
/// reload, newest first: their ids.
async fn two_labelled(s: &Session, root: &Path, out: &Path) -> Result<(String, String)> {
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
    let status = s.script(STATUS).await?;
    ensure!(
        status
            .as_str()
            .is_some_and(|t| t.contains("images, newest first")),
        "the status line does not count the images: {status}"
    );
    s.screenshot(&out.join("gallery.png")).await?;

    Ok((cat, coffee))
}

/// Filters by clicking the Cat chip, then by typing it (in another case, with Enter).
async fn filter_by_cat(s: &Session, out: &Path, (cat, coffee): (&str, &str)) -> Result<()> {
    // Filter by clicking the label, then by typing it (in another case, with Enter).
    let only_the_cat = |v: &Value| ids(v) == [cat.to_string()];
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
        |v| card(v, cat).is_some() && card(v, coffee).is_some(),
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

    Ok(())
}

/// A text file: the API refuses it, and the page says so in words.
async fn text_file_refused(s: &Session, out: &Path) -> Result<()> {
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

    Ok(())
}

/// Larger than POST /upload takes: the page asks POST /uploads and PUTs it to the URL.
async fn large_image_presigned(s: &Session, out: &Path) -> Result<()> {
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

    Ok(())
}

/// By keyboard alone: Tab from the top reaches the file picker, the filter and the label
/// bar's chips, each with a visible focus ring; Enter on the Cat chip filters. A fresh load,
/// so that Tab starts at the top of the page.
async fn by_keyboard(s: &Session, page: &str, a: (&str, &str), cat: &str) -> Result<()> {
    no_violations(s).await?;
    // A reload forgets the tokens (they live in memory only): sign in again.
    open(s, page).await?;
    sign_in(s, a.0, a.1).await?;
    s.script("document.activeElement.blur(); window.scrollTo(0, 0); return true;")
        .await?;
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
        |v: &Value| ids(v) == [cat.to_string()],
    )
    .await?;
    eprintln!(
        "browser: by keyboard: {} Tab presses to the Cat chip ({}), Enter filters",
        path.len(),
        path.join(" > ")
    );

    Ok(())
}

/// A phone's width: nothing wider than the screen.
async fn fits_a_phone(s: &Session, out: &Path) -> Result<()> {
    s.resize(390, 844).await?;
    let overflow = s
        .script("return document.documentElement.scrollWidth - window.innerWidth;")
        .await?;
    ensure!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the page is {overflow} px wider than a 390 px phone"
    );
    s.screenshot(&out.join("phone.png")).await?;

    Ok(())
}

async fn steps(s: &Session, api: &str, u: &Users, (root, out): (&Path, &Path)) -> Result<()> {
    let page = format!("{}/", api.trim_end_matches('/'));
    open(s, &page).await?;
    wrong_password(s, &u.a).await?;
    sign_in(s, &u.a, &u.password).await?;
    let (cat, coffee) = two_labelled(s, root, out).await?;
    filter_by_cat(s, out, (&cat, &coffee)).await?;
    text_file_refused(s, out).await?;
    large_image_presigned(s, out).await?;
    by_keyboard(s, &page, (&u.a, &u.password), &cat).await?;
    fits_a_phone(s, out).await?;
    no_violations(s).await?;
    another_user(s, u, root, &[cat, coffee]).await?;
    no_violations(s).await
}

/// A signs out; B signs in and sees none of A's images, uploads one, and deletes it.
async fn another_user(s: &Session, u: &Users, root: &Path, of_a: &[String]) -> Result<()> {
    s.click("#signout").await?;
    let shown = s
        .script("return [document.getElementById('signin').hidden, document.getElementById('app').hidden, document.querySelectorAll('#grid li').length];")
        .await?;
    ensure!(
        shown == serde_json::json!([false, true, 0]),
        "after sign-out [sign-in hidden, app hidden, cards] = {shown}"
    );
    sign_in(s, &u.b, &u.password).await?;
    let cards = s.script(CARDS).await?;
    let seen = ids(&cards);
    ensure!(
        seen.iter().all(|id| !of_a.contains(id)),
        "B sees A's images: {seen:?}"
    );
    let labels = s
        .script("return document.querySelectorAll('#labels button.chip').length;")
        .await?;
    ensure!(labels == 0, "B sees {labels} label chips of A's images");
    let images = root.join("fixtures").join("images");
    let mine = upload(s, &images.join("coffee.png"), &seen).await?;
    let one = format!("li.card[data-id='{mine}']");
    s.click(&format!("{one} button.delete")).await?;
    s.click(&format!("{one} button.confirm")).await?;
    s.wait_for(
        "B's image gone after Delete for good",
        Duration::from_secs(30),
        CARDS,
        |v| card(v, &mine).is_none(),
    )
    .await?;
    eprintln!(
        "browser: B saw none of A's {} images, uploaded {mine} and deleted it",
        of_a.len()
    );
    Ok(())
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
