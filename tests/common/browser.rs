//! Headless Chromium (Debian's `chromium` and `chromium-driver`, installed by `tests/run`)
//! driven over WebDriver by fantoccini, for the page tests. Without chromium a test is
//! skipped with a message, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A browser session and the chromedriver behind it (both end on drop).
pub struct Browser {
    pub client: Client,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

fn chromium() -> Option<(PathBuf, PathBuf)> {
    let find =
        |names: &[&str]| names.iter().map(|n| Path::new("/usr/bin").join(n)).find(|p| p.exists());
    Some((find(&["chromium", "chromium-browser"])?, find(&["chromedriver"])?))
}

/// Start headless Chromium; `None` (after saying so) when it is not installed outside CI.
pub async fn start() -> Option<Browser> {
    let Some((chrome, driver)) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium and chromedriver are required under CI (tests/run installs them)"
        );
        eprintln!("skipped: install chromium and chromium-driver to run the browser test");
        return None;
    };
    let driver_port = super::free_port();
    let driver = Proc(
        Command::new(&driver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chrome,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", format!("--user-data-dir={}", profile.path().display()),
                "--window-size=1360,900",
            ],
        }),
    );
    let webdriver = format!("http://127.0.0.1:{driver_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match ClientBuilder::rustls().unwrap().capabilities(caps.clone()).connect(&webdriver).await
        {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start chromium through chromedriver: {e}"),
        }
    };
    Some(Browser { client, _driver: driver, _profile: profile })
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A screenshot in `target/ui-screenshots/NAME.png`.
pub async fn shot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Wait for the element at `css` (the page may still be loading), then click it.
pub async fn click(browser: &Client, css: &str) {
    let found =
        browser.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await;
    match found {
        Ok(e) => e.click().await.unwrap(),
        Err(e) => panic!("no {css} ({e}) on:\n{}", browser.source().await.unwrap_or_default()),
    }
}

/// Waits until the browser has navigated to a URL whose query contains `part`, so the next
/// lookup reads the new page and not the one the click left.
pub async fn wait_for_query(browser: &Client, part: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = browser.current_url().await.unwrap();
        let ready = browser.execute("return document.readyState", vec![]).await.unwrap();
        if url.query().is_some_and(|q| q.contains(part)) && ready == "complete" {
            return;
        }
        assert!(Instant::now() < deadline, "never navigated to a URL with {part}: at {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of the element at `css`, waiting for it (a click's navigation may still be
/// loading); the page's source when it never shows up.
pub async fn text_of(browser: &Client, css: &str) -> String {
    let found =
        browser.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await;
    match found {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!("no {css} ({e}) on:\n{}", browser.source().await.unwrap_or_default()),
    }
}
