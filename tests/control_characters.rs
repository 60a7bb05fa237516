//! Control characters in identifiers, from every source, through `xaas run` into the
//! emulator: an externalId holding any of U+0000–U+001F or U+007F is rejected with a reason
//! naming the character and its position, and the other records are imported. The same
//! people come from a real CSV file, a real local HTTP server and a real DynamoDB-compatible
//! server (dynalite, `XAAS_TEST_DYNAMODB_ENDPOINT`; under `CI=true` a missing one fails). The
//! webhook's 422 is in `webhook_http.rs`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as Av, KeySchemaElement, KeyType, ProvisionedThroughput,
    ScalarAttributeType,
};
use common::config::{TestConfig, job_with_source};
use common::{Person, SOURCE, TOKEN};

/// The characters refused in an identifier.
fn controls() -> Vec<char> {
    (0u32..0x20).chain([0x7f]).filter_map(char::from_u32).collect()
}

/// 20 good people, then one person per control character, the character fourth in the id.
fn people() -> (Vec<Person>, Vec<(char, String)>) {
    let good: Vec<Person> = (0..20).map(|i| Person::generate(i, true)).collect();
    let mut all = good.clone();
    let mut bad = Vec::new();
    for (k, c) in controls().into_iter().enumerate() {
        let mut p = Person::generate(100 + k, true);
        p.id = format!("emp{c}{:06}@example.com", 100 + k);
        bad.push((c, p.id.clone()));
        all.push(p);
    }
    (all, bad)
}

/// Run the job on `source` (a `source:` body) and check the report and the emulator.
async fn run_and_check(dir: &Path, sim: &xaas::sim::SimHandle, source: &str, env: &[(&str, &str)]) {
    let (people, bad) = people();
    let mut config = TestConfig::for_run(dir, &sim.base_url());
    config.jobs = vec![job_with_source("hr", SOURCE, source, "")];
    let config = config.write(&dir.join("xaas.yaml"));
    let report_path = dir.join("report.json");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_xaas"));
    cmd.args(common::run_args(&config, &report_path))
        .env("XAAS_TEST_TOKEN", TOKEN)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/xaas-test")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/xaas-test")
        .env_remove("AWS_PROFILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = common::read_report(&report_path);
    let job = &report["jobs"][0];
    assert_eq!(job["outcome"], "completed_with_rejections", "{job}\n{stderr}");
    let rejected = job["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), bad.len(), "one rejection per character: {job}");
    for (c, id) in &bad {
        let code = format!("U+{:04X} at character 4", *c as u32);
        let r = rejected
            .iter()
            .find(|r| r["reason"].as_str().is_some_and(|why| why.contains(&code)))
            .unwrap_or_else(|| panic!("no rejection naming {code}: {rejected:?}"));
        assert_eq!(r["field"], "externalId", "{r}");
        assert_ne!(r["external_id"].as_str(), Some(id.as_str()), "not taken as an id: {r}");
    }
    let snap = sim.snapshot();
    let imported: BTreeSet<&str> = snap.users.iter().map(|u| u.external_id.as_str()).collect();
    let want: BTreeSet<&str> = people[..20].iter().map(|p| p.id.as_str()).collect();
    assert_eq!(imported, want, "the other records are imported, and only they");
    for u in &snap.users {
        assert!(!u.external_id.chars().any(|c| c.is_control()), "{:?}", u.external_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_file() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    common::write_csv(&csv, &people().0);
    run_and_check(
        dir.path(),
        &sim,
        &format!("      type: csv\n      path: {}\n", csv.display()),
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_json_api() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<serde_json::Value> = people().0.iter().map(Person::json).collect();
    let body = serde_json::json!({ "results": records });
    let app = axum::Router::new()
        .route("/people", axum::routing::get(move || async move { axum::Json(body) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let source =
        format!("      type: http\n      url: http://{addr}/people\n      records: /results\n");
    run_and_check(dir.path(), &sim, &source, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_table() {
    let endpoint = match std::env::var("XAAS_TEST_DYNAMODB_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("XAAS_TEST_DYNAMODB_ENDPOINT is not set: run the tests through tests/run")
        }
        _ => return eprintln!("skipped: XAAS_TEST_DYNAMODB_ENDPOINT is not set (run tests/run)"),
    };
    let table = format!("controls_{}", uuid::Uuid::now_v7().simple());
    let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test");
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(creds)
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(conf);
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(5)
                .write_capacity_units(5)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    common::dynamodb_table_active(&client, &table).await.unwrap();
    for p in people().0 {
        let json = p.json();
        let item: HashMap<String, Av> = json
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), Av::S(v.as_str().unwrap_or_default().to_string())))
            .collect();
        client.put_item().table_name(&table).set_item(Some(item)).send().await.unwrap();
    }
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "      type: dynamodb\n      table: {table}\n      region: us-east-1\n      endpoint_url: {endpoint}\n"
    );
    let env = [("AWS_ACCESS_KEY_ID", "AKIDTEST"), ("AWS_SECRET_ACCESS_KEY", "secret")];
    run_and_check(dir.path(), &sim, &source, &env).await;
}
