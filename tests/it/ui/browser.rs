//! A real browser for the page tests: Debian's headless Chromium driven by its ChromeDriver over
//! WebDriver (fantoccini), started on a loopback port by the test and killed when it ends; and
//! axe-core (from the npm registry) run in the page for accessibility.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::support::procs::{self, Daemon};

/// ChromeDriver and a WebDriver session of headless Chromium; both end when dropped (the
/// session first, with [`Browser::close`]).
pub struct Browser {
    pub client: Client,
    _driver: Daemon,
    _dir: tempfile::TempDir,
}

fn chromedriver() -> String {
    let path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
    let found = std::path::Path::new(&path).is_file()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(&path).is_file()));
    assert!(
        found,
        "chromedriver is not installed: run scripts/test.sh, or apt-get install -y \
         --no-install-recommends chromium chromium-driver (or set CHROMEDRIVER)"
    );
    path
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a headless Chromium session.
    pub async fn start() -> Self {
        let driver = chromedriver();
        let dir = tempfile::tempdir().unwrap();
        let port = procs::free_port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        // Its own process group, so that the Chromium it starts is killed with it even when a
        // test fails before ending its session.
        let child = std::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {driver}: {e}"));
        let mut d = Daemon {
            name: "chromedriver",
            child,
        };
        let url = format!("http://127.0.0.1:{port}");
        procs::wait_ready(&mut d, &format!("{url}/status"), dir.path()).await;
        let mut caps = serde_json::Map::new();
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", dir.path().join("profile").display())]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                let log = std::fs::read_to_string(dir.path().join("chromedriver.log"))
                    .unwrap_or_default();
                panic!("no WebDriver session from {driver} ({e}):\n{log}")
            });
        Browser {
            client,
            _driver: d,
            _dir: dir,
        }
    }

    /// Ends the WebDriver session (ChromeDriver is killed on drop).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The text of the page's `main` element.
    pub async fn main_text(&self) -> String {
        self.client
            .find(Locator::Css("main"))
            .await
            .expect("the page has a main element")
            .text()
            .await
            .expect("main's text")
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.expect("url").to_string()
    }

    pub async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// Signs in at `base` with `token` through the form, as a person types it.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/ui/sign-in")).await;
        let field = self
            .client
            .find(Locator::Id("token"))
            .await
            .expect("token field");
        field.send_keys(token).await.expect("type the token");
        self.click_to("form.signin button").await;
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Clicks `css`, which leads to another page, and waits (bounded, 15 s) until the browser
    /// is there and has loaded it: a click does not wait for the navigation it starts.
    pub async fn click_to(&self, css: &str) {
        let before = self.url().await;
        self.click(css).await;
        for _ in 0..300 {
            let ready = self
                .client
                .execute("return document.readyState;", vec![])
                .await
                .ok()
                .is_some_and(|s| s == "complete");
            if ready && self.url().await != before {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("clicking {css} on {before} led nowhere within 15 s");
    }

    /// Whether the page has an element matching `css`.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find")
            .is_empty()
    }

    /// Saves a screenshot as `name`.png in `UI_SCREENSHOTS` when that is set.
    pub async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("UI_SCREENSHOTS") {
            // The whole page, not only the window: as tall as its content.
            let height = self
                .client
                .execute(
                    "window.scrollTo(0, 0); return document.documentElement.scrollHeight;",
                    vec![],
                )
                .await
                .ok()
                .and_then(|h| h.as_u64())
                .unwrap_or(1000)
                .clamp(600, 4000);
            let _ = self.client.set_window_size(1280, height as u32).await;
            let png = self.client.screenshot().await.expect("screenshot");
            let _ = self.client.set_window_size(1280, 1000).await;
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
        }
    }

    /// Runs axe-core in the page; panics listing every serious or critical violation.
    pub async fn assert_accessible(&self, what: &str) {
        let axe = std::fs::read_to_string(axe_core()).expect("reading axe-core");
        self.client
            .execute(&format!("{axe}\n;return typeof axe;"), vec![])
            .await
            .expect("axe-core loads in the page");
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, { resultTypes: ['violations'] })\
                   .then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,\
                       nodes: v.nodes.map(n => n.html).slice(0, 3) }))))\
                   .catch(e => done([{ id: 'axe-error', impact: 'critical', help: String(e) }]));",
                vec![],
            )
            .await
            .expect("axe.run answers");
        let bad: Vec<&Value> = found
            .as_array()
            .expect("violations")
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: serious or critical accessibility violations: {bad:#?}"
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ChromeDriver and every Chromium process it started (one process group); the
        // daemon's own drop then reaps ChromeDriver.
        let group = format!("-{}", self._driver.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// axe.min.js: `AXE_CORE_JS`, or where scripts/test.sh installs it.
fn axe_core() -> PathBuf {
    let path = std::env::var_os("AXE_CORE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("backup-remediator/axe/node_modules/axe-core/axe.min.js")
        });
    assert!(
        path.is_file(),
        "axe-core is not installed at {}: run scripts/test.sh (npm install --prefix \
         ~/.cache/backup-remediator/axe axe-core) or set AXE_CORE_JS to axe.min.js",
        path.display()
    );
    path
}
