//! Signing in to the monitoring page with a real OpenID provider (node's `oidc-provider`,
//! `tests/oidc/provider.mjs`), against the real `xaas serve` binary.
//!
//! - In headless Chromium: a viewer reads the held run but cannot approve it (no button, a
//!   forged POST gets 403), signs out through the provider; an approver approves, and the
//!   run page and `/v1/runs/{id}` name her.
//! - Without a browser (a cookie jar of our own, so a test can do what a browser would not):
//!   a tampered ID token, a wrong nonce, an expired token, a token from the future, a
//!   replayed callback and a replayed code, a callback from another browser, a cookie from
//!   before a logout, and someone with no role: each refused, with the page saying why.
//! - Start-up and configuration errors (an unreachable issuer, a wrong client secret, a
//!   redirect URL the provider refuses) each give a page and a log line saying what to
//!   check, and never the secret.
//! - Behind a reverse proxy under `/xaas` that says `X-Forwarded-Proto: https`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::browser::{self, click, shot, text_of};
use common::config::TestConfig;
use common::oidc::{self, CLIENT_ID, CLIENT_SECRET, IdP, Step, Walker};
use common::serve::Serve;
use common::{Person, TOKEN};
use fantoccini::Locator;
use serde_json::{Value, json};
use xaas::sim::SimHandle;

/// How one daemon signs in.
struct Site<'a> {
    issuer: &'a str,
    secret: &'a str,
    /// The port `xaas serve` listens on.
    port: u16,
    /// `serve.ui.redirect_url` (by default `http://127.0.0.1:{port}/ui/oidc/callback`).
    redirect: String,
    base_path: &'a str,
    /// More lines under `serve.ui.auth` (six spaces in).
    extra: &'a str,
    /// private_key_jwt with this PEM key instead of the client secret, and its client id.
    key: Option<(&'a str, &'a Path)>,
}

impl<'a> Site<'a> {
    fn new(issuer: &'a str) -> Self {
        let port = common::free_port();
        Site {
            issuer,
            secret: CLIENT_SECRET,
            port,
            redirect: format!("http://127.0.0.1:{port}/ui/oidc/callback"),
            base_path: "",
            extra: "",
            key: None,
        }
    }
}

/// The daemon's config: the hr job on `csv`, the page signed in through `site`.
fn write_config(dir: &Path, sim: &SimHandle, csv: &Path, site: &Site) -> PathBuf {
    let secret = dir.join(format!("oidc-secret-{}", site.port));
    std::fs::write(&secret, format!("{}\n", site.secret)).unwrap();
    let credentials = match site.key {
        Some((client_id, pem)) => {
            format!("client_id: {client_id}\n      private_key_file: {}", pem.display())
        }
        None => format!("client_id: {CLIENT_ID}\n      client_secret_file: {}", secret.display()),
    };
    let mut config = TestConfig::new(dir, &sim.base_url(), csv);
    config.serve_mut().listen = format!("127.0.0.1:{}", site.port);
    config.serve_mut().after = format!(
        "  ui:
    enabled: true
    base_path: \"{base}\"
    auth:
      type: oidc
      issuer: {issuer}
      {credentials}
      redirect_url: {redirect}
      viewers: {{groups: [xaas-viewers]}}
      approvers: {{groups: [xaas-approvers]}}
{extra}",
        base = site.base_path,
        issuer = site.issuer,
        redirect = site.redirect,
        extra = site.extra,
    );
    config.write(&dir.join(format!("xaas-{}.yaml", site.port)))
}

/// 200 people imported, then 60 gone: the second run is held (nothing deactivated).
async fn held_run(config: &Path, csv: &Path) -> i64 {
    let people: Vec<Person> = (0..200).map(|i| Person::generate(i, true)).collect();
    common::write_csv(csv, &people);
    let config = config.display().to_string();
    let run = || {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
                .args(["run", "--config", &config])
                .env("XAAS_TEST_TOKEN", TOKEN)
                .env("XAAS_TEST_WEBHOOK_SECRET", common::WEBHOOK_SECRET)
                .output()
                .unwrap()
        })
    };
    let first = run().await.unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    common::write_csv(csv, &people[..140]);
    let held = run().await.unwrap();
    let stdout = String::from_utf8_lossy(&held.stdout).to_string();
    assert_eq!(held.status.code(), Some(5), "{stdout}\n{}", String::from_utf8_lossy(&held.stderr));
    let at = stdout.find("--run ").expect("the approve command") + "--run ".len();
    let id = stdout[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap();
    id.parse().unwrap()
}

/// A page's text with the entities the templates write (`/` is escaped as `&#x2f;`, which a
/// browser reads as `/`).
fn plain(html: &str) -> String {
    html.replace("&#x2f;", "/").replace("&#x27;", "'").replace("&quot;", "\"").replace("&amp;", "&")
}

fn deactivated(sim: &SimHandle) -> usize {
    sim.snapshot().users.iter().filter(|u| u.status == "DEACTIVATED").count()
}

/// The CSRF token of the page `html` (the sign-out form carries one on every page).
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_approve_and_an_approver_does_in_a_browser() {
    let Some(started) = browser::start().await else { return };
    let browser = started.client.clone();
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let redirect = format!("http://127.0.0.1:{port}/ui/oidc/callback");
    let idp = IdP::start(
        dir.path(),
        json!([oidc::client(CLIENT_ID, CLIENT_SECRET, &redirect)]),
        json!({}),
        0,
    )
    .await;
    let site = Site { port, redirect, ..Site::new(&idp.issuer) };
    let csv = dir.path().join("people.csv");
    let config = write_config(dir.path(), &sim, &csv, &site);
    let held_id = held_run(&config, &csv).await;
    let serve = Serve::start(dir.path(), &config, "browser", &[]).await;
    let base = serve.base.clone();

    // Vera, a viewer: sent to the provider, signs in, lands on the page she asked for.
    browser.goto(&format!("{base}/ui/held")).await.unwrap();
    let form = text_of(&browser, "h1").await;
    assert!(form.contains("test IdP"), "at the provider: {form}");
    browser.find(Locator::Id("idp-login")).await.unwrap().send_keys("vera").await.unwrap();
    click(&browser, "#idp-submit").await;
    let held = text_of(&browser, "#held").await;
    assert!(held.contains("60"), "it would deactivate 60: {held}\n{}", serve.log());
    let source = browser.source().await.unwrap();
    assert!(source.contains("vera@example.com"), "who is signed in");
    assert!(!source.contains(&format!("id=\"approve-{held_id}\"")), "no Approve for a viewer");
    shot(&browser, "oidc-viewer-held").await;

    // Her forged approval (her own cookie and CSRF token) is refused, and so is the form.
    let cookie = browser.get_named_cookie("xaas_ui").await.unwrap();
    assert!(cookie.http_only().unwrap_or(false), "{cookie:?}");
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)", "{cookie:?}");
    let jar = format!("xaas_ui={}", cookie.value());
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let forged = http
        .post(format!("{base}/ui/held/{held_id}/approve"))
        .header("cookie", &jar)
        .form(&[("csrf", csrf_of(&source).as_str()), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert!(forged.text().await.unwrap().contains("approver"), "the 403 page says why");
    let confirm =
        http.get(format!("{base}/ui/held/{held_id}/approve")).header("cookie", &jar).send().await;
    assert_eq!(confirm.unwrap().status().as_u16(), 403);
    // She reads the JSON routes.
    let runs = http.get(format!("{base}/v1/runs")).header("cookie", &jar).send().await.unwrap();
    assert_eq!(runs.status().as_u16(), 200);
    assert_eq!(deactivated(&sim), 0);

    // Sign out: the session ends here and at the provider (which asks to confirm).
    click(&browser, "#sign-out").await;
    click(&browser, "button[name=logout]").await;
    let signed_out = text_of(&browser, "main").await;
    assert!(signed_out.contains("You are signed out"), "{signed_out}");
    let old = http.get(format!("{base}/v1/runs")).header("cookie", &jar).send().await.unwrap();
    assert_eq!(old.status().as_u16(), 401, "the session is gone");

    // Abe, an approver: the provider asks again (Vera's session there ended too).
    browser.goto(&format!("{base}/ui/held")).await.unwrap();
    browser.find(Locator::Id("idp-login")).await.unwrap().send_keys("abe").await.unwrap();
    click(&browser, "#idp-submit").await;
    click(&browser, &format!("#approve-{held_id}")).await;
    click(&browser, "#confirm").await;
    shot(&browser, "oidc-approver-confirm").await;
    click(&browser, "#do-approve").await;
    let done = text_of(&browser, "#approved").await;
    assert!(done.contains(&format!("#{held_id} approved")), "{done}");

    // The approval released the next run: the 60 deactivations reach the emulator.
    let deadline = Instant::now() + Duration::from_secs(30);
    while deactivated(&sim) < 60 {
        assert!(Instant::now() < deadline, "the deactivations did not reach okta\n{}", serve.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The run page and its JSON name the approver from the ID token.
    browser.goto(&format!("{base}/ui/runs/{held_id}")).await.unwrap();
    let approvals = text_of(&browser, "#approvals").await;
    assert!(
        approvals.contains("abe@example.com") && approvals.contains("Abe Approver"),
        "{approvals}"
    );
    shot(&browser, "oidc-approved-run").await;
    let cookie = browser.get_named_cookie("xaas_ui").await.unwrap();
    let run: Value = http
        .get(format!("{base}/v1/runs/{held_id}"))
        .header("cookie", format!("xaas_ui={}", cookie.value()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let approver = &run["approvals"][0]["approver"];
    assert_eq!(approver["email"], "abe@example.com", "{run}");
    assert_eq!(approver["subject"], "abe", "{run}");
    assert_eq!(approver["name"], "Abe Approver", "{run}");
    assert_eq!(run["approvals"][0]["approved_by"], "abe@example.com", "{run}");
    browser.close().await.unwrap();
    let log = serve.log();
    assert!(!log.contains(CLIENT_SECRET) && !idp.log().is_empty());
}

/// One sign-in as `user` from `start` up to xaas's answer to the callback.
async fn sign_in(w: &mut Walker, start: &str, user: &str, idp: &IdP) -> (String, Step) {
    let callback = w.sign_in_at_provider(start, user, &idp.issuer, &[], |u| u).await;
    let step = w.get(&callback, &[]).await;
    (callback, step)
}

fn assert_no_session(w: &Walker, step: &Step) {
    assert!(!w.cookies.contains_key("xaas_ui"), "no session for {step:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_stale_sign_ins_are_refused() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let redirect = format!("http://127.0.0.1:{port}/ui/oidc/callback");
    let clients = json!([oidc::client(CLIENT_ID, CLIENT_SECRET, &redirect)]);
    let idp = IdP::start(dir.path(), clients, json!({"mallory": "tamper_id_token"}), 0).await;
    let site = Site { port, redirect, ..Site::new(&idp.issuer) };
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[Person::generate(1, true)]);
    let config = write_config(dir.path(), &sim, &csv, &site);
    let serve = Serve::start(dir.path(), &config, "refusals", &[]).await;
    let base = serve.base.clone();
    let ui = format!("{base}/ui");

    // A page asked for while signed out goes to the login (JSON gets 401).
    let mut w = Walker::new();
    let first = w.get(&format!("{base}/ui/held"), &[]).await;
    assert_eq!(first.status, 303, "{first:?}");
    assert!(
        first.location.as_deref().unwrap().ends_with("/ui/login?next=%2Fui%2Fheld"),
        "{first:?}"
    );
    assert_eq!(w.get(&format!("{base}/v1/runs"), &[]).await.status, 401);

    // A good sign-in; its login cookie is plain over http, Secure when a proxy says https.
    let (callback, ok) = sign_in(&mut w, &ui, "vera", &idp).await;
    assert_eq!(ok.status, 303, "{ok:?}\n{}", serve.log());
    assert!(w.cookies.contains_key("xaas_ui"));
    let login_cookie = w.set_cookies.iter().find(|c| c.starts_with("xaas_login=")).unwrap();
    assert!(
        login_cookie.contains("HttpOnly") && !login_cookie.contains("Secure"),
        "{login_cookie}"
    );
    let mut proxied = Walker::new();
    proxied.get(&format!("{base}/ui/login"), &[("x-forwarded-proto", "https")]).await;
    let secure = proxied.set_cookies.iter().find(|c| c.starts_with("xaas_login=")).unwrap();
    assert!(secure.contains("; Secure"), "{secure}");
    let page = w.get(&ui, &[]).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("vera@example.com"));

    // The same callback again (a replayed code): the login it belonged to is gone.
    let mut replay = Walker::new();
    replay.cookies = w.cookies.clone();
    replay.cookies.remove("xaas_ui");
    let again = replay.get(&callback, &[]).await;
    assert_eq!(again.status, 400, "{again:?}");
    assert!(again.body.contains("already used or has expired"), "{}", again.body);
    assert_no_session(&replay, &again);
    // The old code under a fresh login's state: the provider refuses it.
    let mut thief = Walker::new();
    let fresh = thief.sign_in_at_provider(&ui, "vera", &idp.issuer, &[], |u| u).await;
    let old_code = url::Url::parse(&callback).unwrap();
    let old_code = old_code.query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
    let mut swapped = url::Url::parse(&fresh).unwrap();
    let pairs: Vec<(String, String)> = swapped
        .query_pairs()
        .map(|(k, v)| (k.to_string(), if k == "code" { old_code.clone() } else { v.to_string() }))
        .collect();
    swapped.query_pairs_mut().clear().extend_pairs(pairs);
    let reused = thief.get(swapped.as_str(), &[]).await;
    assert_eq!(reused.status, 400, "a used code must not sign in: {reused:?}");
    assert!(reused.body.contains("already used or has expired"), "{}", reused.body);
    assert_no_session(&thief, &reused);

    // A callback finished in another browser (no login cookie): refused.
    let mut other = Walker::new();
    let mut started = Walker::new();
    let elsewhere = started.sign_in_at_provider(&ui, "vera", &idp.issuer, &[], |u| u).await;
    let step = other.get(&elsewhere, &[]).await;
    assert_eq!(step.status, 400, "{step:?}");
    assert!(step.body.contains("another browser"), "{}", step.body);
    assert_no_session(&other, &step);

    // A tampered ID token (payload rewritten, signature kept): refused.
    let mut mallory = Walker::new();
    let (_, tampered) = sign_in(&mut mallory, &ui, "mallory", &idp).await;
    assert_eq!(tampered.status, 401, "{tampered:?}");
    assert!(tampered.body.contains("ID token was refused"), "{}", tampered.body);
    assert_no_session(&mallory, &tampered);

    // A nonce other than the one this login sent: refused.
    let mut nonced = Walker::new();
    let callback = nonced
        .sign_in_at_provider(&ui, "vera", &idp.issuer, &[], |mut u| {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    (k.to_string(), if k == "nonce" { "forged".into() } else { v.to_string() })
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
            u
        })
        .await;
    let wrong_nonce = nonced.get(&callback, &[]).await;
    assert_eq!(wrong_nonce.status, 401, "{wrong_nonce:?}");
    assert!(wrong_nonce.body.to_lowercase().contains("nonce"), "{}", wrong_nonce.body);
    assert_no_session(&nonced, &wrong_nonce);

    // Someone the roles do not name: a 403 page, no session.
    let mut nora = Walker::new();
    let (_, nobody) = sign_in(&mut nora, &ui, "nora", &idp).await;
    assert_eq!(nobody.status, 403, "{nobody:?}");
    assert!(nobody.body.contains("neither a viewer nor an approver"), "{}", nobody.body);
    assert!(!nobody.body.contains("id=\"jobs\""), "never a half-rendered page");
    assert_no_session(&nora, &nobody);

    // Logout (CSRF-checked) ends the session: the cookie from before it is refused everywhere.
    let kept = w.cookies.clone();
    let no_csrf = w.post(&format!("{base}/ui/logout"), &[("csrf", "wrong")], &[]).await;
    assert_eq!(no_csrf.status, 403, "{no_csrf:?}");
    let out = w.post(&format!("{base}/ui/logout"), &[("csrf", &csrf_of(&page.body))], &[]).await;
    assert_eq!(out.status, 303, "{out:?}");
    let end = out.location.unwrap();
    assert!(end.starts_with(&format!("{}/session/end", idp.issuer)), "{end}");
    assert!(end.contains("id_token_hint=") && end.contains("post_logout_redirect_uri="), "{end}");
    let mut stale = Walker::new();
    stale.cookies = kept;
    let refused = stale.get(&ui, &[]).await;
    assert_eq!(refused.status, 303, "to the login: {refused:?}");
    assert!(refused.location.unwrap().contains("/ui/login"));
    assert_eq!(stale.get(&format!("{base}/v1/runs"), &[]).await.status, 401);

    let log = serve.log();
    assert!(log.contains("sign-in to the page failed"), "{log}");
    assert!(log.contains("holds no role on the page"), "{log}");
    assert!(!log.contains(CLIENT_SECRET), "no secret in the log");
}

/// An ID token from a provider whose clock is `offset` seconds off: refused with a page that
/// points at the clocks.
async fn clock_refused(offset: i64, what: &str) {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let redirect = format!("http://127.0.0.1:{port}/ui/oidc/callback");
    let clients = json!([oidc::client(CLIENT_ID, CLIENT_SECRET, &redirect)]);
    let idp = IdP::start(dir.path(), clients, json!({}), offset).await;
    let site =
        Site { port, redirect, extra: "      clock_skew_secs: 30\n", ..Site::new(&idp.issuer) };
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[Person::generate(1, true)]);
    let config = write_config(dir.path(), &sim, &csv, &site);
    let serve = Serve::start(dir.path(), &config, what, &[]).await;
    let mut w = Walker::new();
    let (_, step) = sign_in(&mut w, &format!("{}/ui", serve.base), "vera", &idp).await;
    assert_eq!(step.status, 401, "{what}: {step:?}\n{}", serve.log());
    assert!(step.body.contains("check NTP on both"), "{what}: {}", step.body);
    assert_no_session(&w, &step);
    assert!(serve.log().contains("clock_skew_secs"), "{what}: the log says it too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_id_token_is_refused() {
    // Issued two hours ago with a 10-minute life.
    clock_refused(-7200, "expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_from_the_future_is_refused() {
    clock_refused(600, "future").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_failures_say_what_to_check_without_the_secret() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[Person::generate(1, true)]);
    let (wrong_secret, refused_redirect) = (Site::new("-"), Site::new("-"));
    let registered = |s: &Site| s.redirect.clone();
    let clients = json!([
        oidc::client(CLIENT_ID, CLIENT_SECRET, &registered(&wrong_secret)),
        // Not the redirect URL the second daemon sends.
        oidc::client("other", CLIENT_SECRET, &registered(&refused_redirect)),
    ]);
    let idp = IdP::start(dir.path(), clients, json!({}), 0).await;

    // The issuer cannot be reached (nothing listens there): the daemon starts all the same.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let config = write_config(dir.path(), &sim, &csv, &Site::new(&closed));
    let serve = Serve::start(dir.path(), &config, "unreachable", &[]).await;
    let step = Walker::new().get(&format!("{}/ui/login", serve.base), &[]).await;
    assert_eq!(step.status, 502, "{step:?}");
    assert!(step.body.contains("cannot reach the identity provider"), "{}", step.body);
    assert!(step.body.contains("serve.ui.auth.issuer"), "{}", step.body);
    let log = serve.log();
    assert!(log.contains("the page's sign-in is not ready yet"), "at start-up: {log}");
    assert!(log.contains("sign-in to the page failed"), "{log}");
    drop(serve);

    // The issuer with a slash the provider's does not have: the page says which to write.
    let slashed = format!("{}/", idp.issuer);
    let config = write_config(dir.path(), &sim, &csv, &Site::new(&slashed));
    let serve = Serve::start(dir.path(), &config, "slashed", &[]).await;
    let step = Walker::new().get(&format!("{}/ui/login", serve.base), &[]).await;
    assert_eq!(step.status, 502, "{step:?}");
    let text = plain(&step.body);
    assert!(text.contains("must be exactly the `issuer` of its discovery document"), "{text}");
    drop(serve);

    // A wrong client secret: the provider says invalid_client at the code exchange.
    let site = Site { secret: "not-the-secret-0123456789", issuer: &idp.issuer, ..wrong_secret };
    let config = write_config(dir.path(), &sim, &csv, &site);
    let serve = Serve::start(dir.path(), &config, "secret", &[]).await;
    let mut w = Walker::new();
    let (_, step) = sign_in(&mut w, &format!("{}/ui", serve.base), "abe", &idp).await;
    assert_eq!(step.status, 502, "{step:?}");
    assert!(plain(&step.body).contains("refused this app's credentials"), "{}", step.body);
    assert!(step.body.contains("client secret"), "{}", step.body);
    let log = serve.log();
    assert!(log.contains("invalid_client"), "{log}");
    for text in [&log, &step.body] {
        assert!(!text.contains("not-the-secret") && !text.contains(CLIENT_SECRET));
    }
    drop(serve);

    // A redirect URL the app does not list: the probe finds it before anyone is sent there.
    let site = Site { issuer: &idp.issuer, ..refused_redirect };
    let config = write_config(dir.path(), &sim, &csv, &site);
    let serve = Serve::start(dir.path(), &config, "redirect", &[]).await;
    let step = Walker::new().get(&format!("{}/ui/login", serve.base), &[]).await;
    assert_eq!(step.status, 502, "{step:?}");
    assert!(step.body.contains("sign-in redirect URI"), "{}", step.body);
    assert!(plain(&step.body).contains(&site.redirect), "names the URL: {}", step.body);
    assert!(serve.log().contains("refused the sign-in request"), "{}", serve.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_in_behind_a_proxy_under_a_path_prefix() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // The proxy terminates TLS in production: the browser's URLs are https.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    drop(listener);
    let public = format!("https://127.0.0.1:{proxy_port}/xaas");
    let redirect = format!("{public}/ui/oidc/callback");
    let clients = json!([oidc::client(CLIENT_ID, CLIENT_SECRET, &redirect)]);
    let idp = IdP::start(dir.path(), clients, json!({}), 0).await;
    let site = Site { port, redirect, base_path: "/xaas", ..Site::new(&idp.issuer) };
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[Person::generate(1, true)]);
    let config = write_config(dir.path(), &sim, &csv, &site);
    let serve = Serve::start(dir.path(), &config, "proxied", &[]).await;
    let front = proxy_on(proxy_port, serve.base.clone()).await;
    let through_proxy = |url: &str| url.replace(&public, &format!("{front}/xaas"));

    let mut w = Walker::new();
    let first = w.get(&format!("{front}/xaas/ui/held"), &[]).await;
    assert_eq!(first.status, 303, "{first:?}");
    assert!(first.location.as_deref().unwrap().contains("/xaas/ui/login?next="), "{first:?}");
    let callback =
        w.sign_in_at_provider(&format!("{front}/xaas/ui"), "abe", &idp.issuer, &[], |u| u).await;
    assert!(callback.starts_with(&format!("{public}/ui/oidc/callback?")), "{callback}");
    let done = w.get(&through_proxy(&callback), &[]).await;
    assert_eq!(done.status, 303, "{done:?}\n{}", serve.log());
    assert!(done.location.as_deref().unwrap().contains("/xaas/ui"), "{done:?}");
    let session = w.set_cookies.iter().rev().find(|c| c.starts_with("xaas_ui=")).unwrap();
    for part in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/xaas/"] {
        assert!(session.contains(part), "{part} in {session}");
    }
    let page = w.get(&format!("{front}/xaas/ui"), &[]).await;
    assert_eq!(page.status, 200, "{page:?}");
    let html = plain(&page.body);
    assert!(html.contains("href=\"/xaas/ui/held\""), "links carry the prefix: {html}");
    assert!(html.contains("action=\"/xaas/ui/logout\""), "so do forms: {html}");
    let out =
        w.post(&format!("{front}/xaas/ui/logout"), &[("csrf", &csrf_of(&page.body))], &[]).await;
    let end = url::Url::parse(out.location.as_deref().unwrap()).unwrap();
    let back = end.query_pairs().find(|(k, _)| k == "post_logout_redirect_uri").unwrap().1;
    assert_eq!(back, format!("{public}/ui/login?signed_out=1"));
}

/// A reverse proxy on `port` (the redirect URL names it before the daemon starts): `/xaas/...`
/// to the daemon's `/...`, saying the browser came over https.
async fn proxy_on(port: u16, upstream: String) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let url = proxy_at(port, upstream.clone()).await;
        if let Some(url) = url {
            return url;
        }
        assert!(Instant::now() < deadline, "port {port} taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn proxy_at(port: u16, upstream: String) -> Option<String> {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;
    async fn forward(State(upstream): State<String>, req: Request) -> Response {
        let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
        let Some(rest) = path.strip_prefix("/xaas") else {
            return Response::builder().status(404).body(Body::empty()).unwrap();
        };
        let http =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let mut out = http.request(req.method().clone(), format!("{upstream}{rest}"));
        for (k, v) in req.headers() {
            if k != "host" {
                out = out.header(k, v);
            }
        }
        out = out.header("x-forwarded-proto", "https");
        let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap();
        let answer = out.body(body).send().await.unwrap();
        let mut response = Response::builder().status(answer.status());
        for (k, v) in answer.headers() {
            response = response.header(k, v);
        }
        response.body(Body::from(answer.bytes().await.unwrap())).unwrap()
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.ok()?;
    let app = axum::Router::new().fallback(forward).with_state(upstream);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Some(format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_signs_in_with_an_rsa_or_an_ec_key() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[Person::generate(1, true)]);
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oauth");
    let (rsa, ec) = (keys.join("test-rsa-private.pem"), keys.join("test-ec-private.pem"));
    let wrong = keys.join("test-wrong-rsa-private.pem");
    let (rsa_site, ec_site, wrong_site) = (Site::new("-"), Site::new("-"), Site::new("-"));
    let registered = |id: &str, pem: &Path, site: &Site| {
        let mut c = oidc::client(id, "", &site.redirect);
        c.as_object_mut().unwrap().remove("client_secret");
        c["key_pem"] = std::fs::read_to_string(pem).unwrap().into();
        c
    };
    let clients = json!([
        registered("xaas-rsa", &rsa, &rsa_site),
        registered("xaas-ec", &ec, &ec_site),
        // Registered with the RSA key; the daemon signs with another.
        registered("xaas-wrong", &rsa, &wrong_site),
    ]);
    let idp = IdP::start(dir.path(), clients, json!({}), 0).await;
    for (id, pem, site) in [("xaas-rsa", &rsa, rsa_site), ("xaas-ec", &ec, ec_site)] {
        let site = Site { issuer: &idp.issuer, key: Some((id, pem)), ..site };
        let config = write_config(dir.path(), &sim, &csv, &site);
        let serve = Serve::start(dir.path(), &config, id, &[]).await;
        let mut w = Walker::new();
        let (_, step) = sign_in(&mut w, &format!("{}/ui", serve.base), "abe", &idp).await;
        assert_eq!(step.status, 303, "{id}: {step:?}\n{}\n{}", serve.log(), idp.log());
        assert!(w.cookies.contains_key("xaas_ui"), "{id}: signed in");
        let page = w.get(&format!("{}/ui/held", serve.base), &[]).await;
        assert_eq!(page.status, 200, "{id}: {page:?}");
        assert!(!serve.log().contains("PRIVATE KEY"), "{id}: no key in the log");
    }
    // The wrong key for the app: the provider refuses the assertion; the page says what to check.
    let site = Site { issuer: &idp.issuer, key: Some(("xaas-wrong", &wrong)), ..wrong_site };
    let config = write_config(dir.path(), &sim, &csv, &site);
    let serve = Serve::start(dir.path(), &config, "wrong-key", &[]).await;
    let mut w = Walker::new();
    let (_, step) = sign_in(&mut w, &format!("{}/ui", serve.base), "abe", &idp).await;
    assert_eq!(step.status, 502, "{step:?}");
    assert!(plain(&step.body).contains("client secret (or private key)"), "{}", step.body);
    assert!(!w.cookies.contains_key("xaas_ui"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_and_at_their_maximum_age() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let redirect = format!("http://127.0.0.1:{port}/ui/oidc/callback");
    let clients = json!([oidc::client(CLIENT_ID, CLIENT_SECRET, &redirect)]);
    let idp = IdP::start(dir.path(), clients, json!({}), 0).await;
    let extra = "      session_idle_secs: 2\n      session_max_secs: 5\n";
    let site = Site { port, redirect, extra, ..Site::new(&idp.issuer) };
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[Person::generate(1, true)]);
    let config = write_config(dir.path(), &sim, &csv, &site);
    let serve = Serve::start(dir.path(), &config, "timeouts", &[]).await;
    let (jobs, ui) = (format!("{}/v1/jobs", serve.base), format!("{}/ui", serve.base));

    // Left alone for longer than the idle timeout: signed out.
    let mut idle = Walker::new();
    let (_, step) = sign_in(&mut idle, &ui, "vera", &idp).await;
    assert_eq!(step.status, 303, "{step:?}");
    assert_eq!(idle.get(&jobs, &[]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(idle.get(&jobs, &[]).await.status, 401, "idle for 2.5 s of 2");

    // In use every half second: kept past the idle timeout, ended at the maximum age.
    let mut busy = Walker::new();
    let started = Instant::now();
    let (_, step) = sign_in(&mut busy, &ui, "vera", &idp).await;
    assert_eq!(step.status, 303, "{step:?}");
    let mut last_ok = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(7) {
        match busy.get(&jobs, &[]).await.status {
            200 => last_ok = started.elapsed(),
            401 => break,
            other => panic!("{other}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(last_ok > Duration::from_secs(3), "kept while in use: {last_ok:?}");
    assert!(started.elapsed() < Duration::from_secs(7), "ended by session_max_secs");
    assert_eq!(busy.get(&jobs, &[]).await.status, 401);
}

/// What `xaas serve` needs to reach dynalite as AWS.
const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent/xaas-test"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/xaas-test"),
];

/// With DynamoDB state, the pending login and the session are shared: a sign-in started on
/// one replica finishes on another, its session works on both and after a restart, and a
/// logout on one ends it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_started_on_one_replica_finishes_on_another_and_survives_a_restart() {
    let endpoint = match std::env::var("XAAS_TEST_DYNAMODB_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("XAAS_TEST_DYNAMODB_ENDPOINT is not set: run the tests through tests/run")
        }
        _ => return eprintln!("skipped: XAAS_TEST_DYNAMODB_ENDPOINT is not set (run tests/run)"),
    };
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let redirect = format!("http://127.0.0.1:{port}/ui/oidc/callback");
    let clients = json!([oidc::client(CLIENT_ID, CLIENT_SECRET, &redirect)]);
    let idp = IdP::start(dir.path(), clients, json!({}), 0).await;
    let site = Site { port, redirect, ..Site::new(&idp.issuer) };
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &[Person::generate(1, true)]);
    let first = write_config(dir.path(), &sim, &csv, &site);
    let prefix = format!("oidc_{}_", uuid::Uuid::now_v7().simple());
    let state = format!(
        "state:\n  backend: dynamodb\n  table_prefix: {prefix}\n  region: us-east-1\n  endpoint_url: {endpoint}\n"
    );
    let text = std::fs::read_to_string(&first).unwrap();
    let at = text.find("state:\n").unwrap();
    let end = at + text[at..].find("serve:").unwrap();
    let shared = format!("{}{state}{}", &text[..at], &text[end..]);
    std::fs::write(&first, &shared).unwrap();
    // The other replicas: the same config on a port of their own.
    let other = dir.path().join("xaas-other.yaml");
    std::fs::write(
        &other,
        shared.replace(&format!("listen: 127.0.0.1:{port}"), "listen: 127.0.0.1:0"),
    )
    .unwrap();
    let a = Serve::start(dir.path(), &first, "replica-a", AWS_ENV).await;
    let b = Serve::start(dir.path(), &other, "replica-b", AWS_ENV).await;

    let mut w = Walker::new();
    let callback =
        w.sign_in_at_provider(&format!("{}/ui", a.base), "abe", &idp.issuer, &[], |u| u).await;
    assert!(callback.starts_with(&a.base), "{callback}");
    let on_b = w.get(&callback.replace(&a.base, &b.base), &[]).await;
    assert_eq!(on_b.status, 303, "finished on B: {on_b:?}\n{}", b.log());
    let page = w.get(&format!("{}/ui", a.base), &[]).await;
    assert_eq!(page.status, 200, "the session works on A: {page:?}");
    assert!(page.body.contains("abe@example.com"));

    drop(a);
    let restarted = Serve::start(dir.path(), &other, "replica-a2", AWS_ENV).await;
    let again = w.get(&format!("{}/ui/held", restarted.base), &[]).await;
    assert_eq!(again.status, 200, "after a restart: {again:?}");

    let kept = w.cookies["xaas_ui"].clone();
    let out =
        w.post(&format!("{}/ui/logout", b.base), &[("csrf", &csrf_of(&page.body))], &[]).await;
    assert_eq!(out.status, 303, "{out:?}");
    let mut stale = Walker::new();
    stale.cookies.insert("xaas_ui".into(), kept);
    assert_eq!(stale.get(&format!("{}/v1/jobs", restarted.base), &[]).await.status, 401);
}
