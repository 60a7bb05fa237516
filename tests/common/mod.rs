//! Shared helpers for the end-to-end tests: a real emulator on 127.0.0.1:0, config files in a
//! temporary directory, and the real `xaas` binary.
#![allow(dead_code)]

pub mod browser;
pub mod config;
pub mod oidc;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use xaas::sim::{SimConfig, SimHandle};

pub const SOURCE: &str = "0oasim0000000000000";
pub const TOKEN: &str = "sim-token";
pub const HEADER: &str = "id,active,title,first_name,last_name,street_number,street_name,city,state,country,postcode,email,phone,cell,dob";

/// Emulator with its clock running `scale`× faster (300 → Okta's 5 minutes take 1 s).
pub async fn start_sim(scale: f64) -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig {
        clock_scale: scale,
        processing_delay: Duration::from_millis(20),
        ..SimConfig::default()
    };
    xaas::sim::spawn(config, listener).await.unwrap()
}

/// The repo's example mapping.
pub fn mapping_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/seed-dynamodb.yaml")
}

/// Write a config for one CSV job against `base_url`; returns its path.
/// `spacing_secs` is the client's session spacing in real seconds; `extra_job` lines (indented
/// by four spaces) go into the job. The state is the default file next to the config.
pub fn write_config(
    dir: &Path,
    base_url: &str,
    csv: &Path,
    spacing_secs: f64,
    extra_job: &str,
) -> PathBuf {
    let mut config = config::TestConfig::for_run(dir, base_url);
    config.okta = format!(
        "  session_spacing_secs: {spacing_secs}\n  poll_initial_ms: 20\n  poll_max_secs: 1\n"
    );
    config.state = String::new();
    config.jobs = vec![config::job("hr", SOURCE, csv, extra_job)];
    config.write(&dir.join("xaas.yaml"))
}

/// Run the real binary with `args`, the token in XAAS_TEST_TOKEN.
pub fn xaas(args: &[&str], token: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
        .args(args)
        .env("XAAS_TEST_TOKEN", token)
        .env("XAAS_LOG", "xaas=info")
        .output()
        .unwrap()
}

/// Run the binary on a blocking thread so the in-process emulator keeps serving.
pub async fn xaas_async(args: Vec<String>, token: &str) -> Output {
    let token = token.to_string();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        xaas(&args, &token)
    })
    .await
    .unwrap()
}

/// One synthetic person in the seed's schema.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub active: bool,
    pub title: String,
    pub first: String,
    pub last: String,
    pub street_number: String,
    pub street_name: String,
    pub city: String,
    pub state: String,
    pub country: String,
    pub postcode: String,
    pub email: String,
    pub phone: String,
    pub cell: String,
}

impl Person {
    pub fn generate(i: usize, active: bool) -> Self {
        let firsts = ["Ana", "Jörg", "Zoë", "Łukasz", "Chloé", "Søren", "Nuño", "Amélie"];
        let lasts = ["García", "Müller", "Østergaard", "Nowak", "Dubois", "O'Brien", "Smith"];
        let first = format!("{}{}", firsts[i % firsts.len()], i % 97);
        let last = lasts[(i / 7) % lasts.len()].to_string();
        Person {
            id: format!("emp{i:06}@example.com"),
            active,
            title: ["Mr", "Ms", "Dr"][i % 3].into(),
            first,
            last,
            street_number: format!("{}", 1 + i % 9000),
            street_name: "Calle del Arenal, Bajo".into(),
            city: "Las Palmas de Gran Canaria".into(),
            state: "Andalucía".into(),
            country: "ES".into(),
            postcode: format!("{:05}", i % 100_000),
            email: format!("emp{i:06}@example.com"),
            phone: format!("973-{:03}-{:03}", i % 1000, (i / 1000) % 1000),
            cell: format!("630-{:03}-{:03}", (i * 7) % 1000, (i / 7) % 1000),
        }
    }

    pub fn csv_row(&self) -> String {
        let q = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        [
            q(&self.id),
            self.active.to_string(),
            q(&self.title),
            q(&self.first),
            q(&self.last),
            q(&self.street_number),
            q(&self.street_name),
            q(&self.city),
            q(&self.state),
            q(&self.country),
            q(&self.postcode),
            q(&self.email),
            q(&self.phone),
            q(&self.cell),
            "1990-01-01T00:00:00.000Z".to_string(),
        ]
        .join(",")
    }

    /// The profile the seed mapping must produce, computed independently of the mapping code.
    pub fn expected_profile(&self) -> std::collections::BTreeMap<String, String> {
        [
            ("userName", self.email.clone()),
            ("firstName", self.first.clone()),
            ("lastName", self.last.clone()),
            ("email", self.email.clone()),
            ("mobilePhone", self.cell.clone()),
            ("title", self.title.clone()),
            ("displayName", format!("{} {}", self.first, self.last)),
            ("primaryPhone", self.phone.clone()),
            ("zipCode", self.postcode.clone()),
            ("streetAddress", format!("{} {}", self.street_number, self.street_name)),
            ("city", self.city.clone()),
            ("state", self.state.clone()),
            ("countryCode", self.country.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Write people as a CSV (CRLF line ends, like most HR exports).
pub fn write_csv(path: &Path, people: &[Person]) {
    let mut text = String::with_capacity(people.len() * 200);
    text.push_str(HEADER);
    text.push_str("\r\n");
    for p in people {
        text.push_str(&p.csv_row());
        text.push_str("\r\n");
    }
    std::fs::write(path, text).unwrap();
}

pub fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// What `xaas run --report` produced.
pub struct Run {
    pub out: Output,
    pub report_path: PathBuf,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn report(&self) -> serde_json::Value {
        read_report(&self.report_path)
    }
}

/// The arguments of `xaas run --config CONFIG --report REPORT`.
pub fn run_args(config: &Path, report: &Path) -> Vec<String> {
    vec![
        "run".to_string(),
        "--config".to_string(),
        config.display().to_string(),
        "--report".to_string(),
        report.display().to_string(),
    ]
}

/// Write a one-job config for `csv` against `base_url` and run `xaas run --report` on it.
pub async fn run_csv(dir: &Path, base_url: &str, csv: &Path, extra_job: &str, token: &str) -> Run {
    let config = write_config(dir, base_url, csv, 1.05, extra_job);
    let report_path = dir.join("report.json");
    Run { out: xaas_async(run_args(&config, &report_path), token).await, report_path }
}

impl Person {
    /// The person as a JSON record in the seed's source shape (what an HR system pushes).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "active": self.active.to_string(), "title": self.title,
            "first_name": self.first, "last_name": self.last,
            "street_number": self.street_number, "street_name": self.street_name,
            "city": self.city, "state": self.state, "country": self.country,
            "postcode": self.postcode, "email": self.email, "phone": self.phone,
            "cell": self.cell, "dob": "1990-01-01T00:00:00.000Z",
        })
    }
}

/// The webhook secret the daemon tests configure (`XAAS_TEST_WEBHOOK_SECRET`).
pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789";

/// A free loopback port (bound, read, released): only for third-party servers that cannot
/// report a port they chose (chromedriver). Our own servers bind port 0 and say which port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `url` signed with [`WEBHOOK_SECRET`] (an empty body); (status, JSON answer or null).
pub async fn signed_get(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let ts = chrono::Utc::now().timestamp();
    let signature = xaas::daemon::auth::sign(WEBHOOK_SECRET.as_bytes(), ts, b"");
    let resp = client
        .get(url)
        .header("x-xaas-timestamp", ts.to_string())
        .header("x-xaas-signature", signature)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// POST `body` signed with [`WEBHOOK_SECRET`]; (status, JSON answer or null).
pub async fn signed_post(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let body = serde_json::to_vec(body).unwrap();
    let ts = chrono::Utc::now().timestamp();
    let signature = xaas::daemon::auth::sign(WEBHOOK_SECRET.as_bytes(), ts, &body);
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-xaas-timestamp", ts.to_string())
        .header("x-xaas-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// A signed request kept as sent, so a test can send the very same bytes again (a replay).
#[derive(Debug, Clone)]
#[allow(dead_code)] // not every test binary replays
pub struct SignedRequest {
    pub path: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: Vec<u8>,
}

#[allow(dead_code)]
impl SignedRequest {
    /// POST `body` to `path`, signed now with [`WEBHOOK_SECRET`]: `v2=` (method and path
    /// covered) when `v2`, else `v1=`.
    pub fn post(path: &str, body: &serde_json::Value, v2: bool) -> Self {
        use xaas::daemon::auth;
        let body = serde_json::to_vec(body).unwrap();
        let timestamp = chrono::Utc::now().timestamp();
        let secret = WEBHOOK_SECRET.as_bytes();
        let signature = if v2 {
            auth::sign_v2(secret, timestamp, "POST", path, &body)
        } else {
            auth::sign(secret, timestamp, &body)
        };
        Self { path: path.into(), timestamp, signature, body }
    }

    /// Send it to the daemon at `base` (`http://127.0.0.1:port`); (status, JSON answer).
    pub async fn send(&self, client: &reqwest::Client, base: &str) -> (u16, serde_json::Value) {
        let resp = client
            .post(format!("{base}{}", self.path))
            .header("content-type", "application/json")
            .header("x-xaas-timestamp", self.timestamp.to_string())
            .header("x-xaas-signature", &self.signature)
            .body(self.body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// Wait until the DynamoDB server reports `table` ACTIVE. dynalite creates tables
/// asynchronously even with `--createTableMs 0`, and a write to a table still CREATING fails with
/// ResourceNotFoundException. (The SDK's `wait_until_table_exists` polls every 20 s at least.)
pub async fn dynamodb_table_active(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), String> {
    for _ in 0..200 {
        let d = client.describe_table().table_name(table).send().await;
        let status = d.ok().and_then(|d| d.table).and_then(|t| t.table_status);
        if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("the DynamoDB table {table} did not become ACTIVE within 10 s"))
}
