//! A real OpenID provider for the sign-in tests (`tests/oidc/provider.mjs`, node's
//! `oidc-provider` from npm, installed by `tests/run` into `target/oidc-provider`), and a
//! browser-less client that walks its login with a cookie jar of its own, so a test can
//! change what a browser could not (the nonce, a replayed callback, an old cookie).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The client xaas signs in with.
pub const CLIENT_ID: &str = "xaas";
pub const CLIENT_SECRET: &str = "xaas-test-client-secret-0123456789";

/// A running provider, killed on drop.
pub struct IdP {
    child: Child,
    pub issuer: String,
    log: PathBuf,
}

impl Drop for IdP {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where tests/run installed oidc-provider; a clear failure when it did not.
fn modules() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oidc-provider/node_modules");
    assert!(
        dir.join("oidc-provider/package.json").exists(),
        "oidc-provider is not installed in {}: run the tests through tests/run, which installs it from npm",
        dir.display()
    );
    dir
}

/// The provider's client entry for xaas at `redirect` (and its sign-out landing page).
pub fn client(id: &str, secret: &str, redirect: &str) -> Value {
    let signed_out = redirect.replace("/ui/oidc/callback", "/ui/login?signed_out=1");
    json!({
        "client_id": id, "client_secret": secret, "redirect_uris": [redirect],
        "post_logout_redirect_uris": [signed_out],
    })
}

/// The accounts every test signs in as: a viewer, an approver (by group) and someone with
/// neither role.
pub fn accounts() -> Value {
    json!({
        "vera": {"email": "vera@example.com", "name": "Vera Viewer", "groups": ["xaas-viewers"]},
        "abe": {"email": "abe@example.com", "name": "Abe Approver", "groups": ["xaas-approvers", "staff"]},
        "nora": {"email": "nora@example.com", "name": "Nora Nobody", "groups": ["staff"]},
    })
}

impl IdP {
    /// Start the provider on a free port with `clients` and `faults` (by account or client
    /// id), its clock `clock_offset_secs` away from the real one.
    pub async fn start(dir: &Path, clients: Value, faults: Value, clock_offset_secs: i64) -> IdP {
        let port = super::free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        let config = json!({
            "port": port, "issuer": issuer, "clients": clients, "accounts": accounts(),
            "id_token_ttl": 600, "faults": faults, "clock_offset_secs": clock_offset_secs,
        });
        let path = dir.join(format!("idp-{port}.json"));
        std::fs::write(&path, config.to_string()).unwrap();
        let log = dir.join(format!("idp-{port}.log"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs");
        let child = Command::new("node")
            .arg(script)
            .arg(&path)
            .env("XAAS_OIDC_MODULES", modules())
            .env("NODE_ENV", "production")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("node is needed for the OpenID provider");
        let idp = IdP { child, issuer, log };
        let http = reqwest::Client::new();
        let discovery = format!("{}/.well-known/openid-configuration", idp.issuer);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(&discovery).send().await
                && r.status().is_success()
            {
                return idp;
            }
            assert!(Instant::now() < deadline, "the OpenID provider did not start:\n{}", idp.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        let err = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        format!("{out}{err}")
    }
}

/// An HTTP client that follows nothing by itself and keeps cookies by name (like a browser
/// on one host, it sends every cookie to every port of 127.0.0.1).
pub struct Walker {
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    /// Every `Set-Cookie` seen, as sent.
    pub set_cookies: Vec<String>,
}

/// One answer: status, `Location`, body.
#[derive(Debug)]
pub struct Step {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Default for Walker {
    fn default() -> Self {
        Self::new()
    }
}

impl Walker {
    pub fn new() -> Self {
        let http =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Walker { http, cookies: BTreeMap::new(), set_cookies: Vec::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn keep(&mut self, r: reqwest::Response, base: &str) -> Step {
        for v in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = v.to_str().unwrap().to_string();
            let pair = text.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            let gone = v.is_empty() || text.to_ascii_lowercase().contains("max-age=0");
            if gone {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
            self.set_cookies.push(text);
        }
        let location = r.headers().get(reqwest::header::LOCATION).map(|l| {
            let l = l.to_str().unwrap();
            url::Url::parse(base).unwrap().join(l).unwrap().to_string()
        });
        Step { status: r.status().as_u16(), location, body: r.text().await.unwrap_or_default() }
    }

    pub async fn get(&mut self, url: &str, headers: &[(&str, &str)]) -> Step {
        let mut req = self.http.get(url).header("cookie", self.cookie_header());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        self.keep(r, url).await
    }

    pub async fn post(
        &mut self,
        url: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Step {
        let mut req = self.http.post(url).header("cookie", self.cookie_header()).form(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        self.keep(r, url).await
    }

    /// From `start` (a page of xaas), through the provider's login as `user`, up to the
    /// redirect back to xaas's callback: its URL, not yet requested. `tweak` may change the
    /// authorization request on its way to the provider.
    pub async fn sign_in_at_provider(
        &mut self,
        start: &str,
        user: &str,
        issuer: &str,
        headers: &[(&str, &str)],
        tweak: impl Fn(url::Url) -> url::Url,
    ) -> String {
        let mut url = start.to_string();
        let mut tweaked = false;
        for _ in 0..12 {
            let at_provider = url.starts_with(issuer);
            if at_provider && url.contains("/auth?") && !tweaked {
                url = tweak(url::Url::parse(&url).unwrap()).to_string();
                tweaked = true;
            }
            let step =
                if at_provider { self.get(&url, &[]).await } else { self.get(&url, headers).await };
            match step.location {
                Some(next) if next.contains("/ui/oidc/callback") => return next,
                Some(next) => url = next,
                None if at_provider && step.status == 200 && url.contains("/interaction/") => {
                    let post = format!("{}/login", url.split('?').next().unwrap());
                    let answer = self.post(&post, &[("login", user)], &[]).await;
                    match answer.location.clone() {
                        Some(next) => url = next,
                        None => panic!("the login form: {answer:?}"),
                    }
                }
                None => panic!("stuck at {url}: {step:?}"),
            }
        }
        panic!("too many redirects from {start}")
    }
}
