//! Several `xaas serve` replicas on the DynamoDB state backend: three real processes share one
//! dynalite (`XAAS_TEST_DYNAMODB_ENDPOINT`, started by `tests/run`; under `CI=true` a missing
//! endpoint fails) and one emulator with two identity sources, one job each. Signed pushes and
//! triggers go to random replicas. The lease owner of one source is killed (SIGKILL) mid-run:
//! its job moves to another replica within the lease time (the takeover time is printed), and
//! the emulator ends with exactly the source state, no overlapping sessions on any source and
//! no duplicate externalId in any session. Then a replica that does not hold the source shows
//! its runs, decisions and pages, and a signed push replayed to another replica is answered
//! as a duplicate of the first and not imported again.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as Av;
use common::config::{self, TestConfig};
use common::serve::Serve;
use common::{Person, SignedRequest, signed_post};
use xaas::sim::{SimConfig, SimHandle};

const SOURCE_A: &str = "0oasimaaaaaaaaaaaaa";
const SOURCE_B: &str = "0oasimbbbbbbbbbbbbb";
const LEASE_SECS: u64 = 3;
const UI_TOKEN: &str = "multi-replica-ui-token-0123456789";

fn endpoint() -> Option<String> {
    match std::env::var("XAAS_TEST_DYNAMODB_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("XAAS_TEST_DYNAMODB_ENDPOINT is not set: run the tests through tests/run")
        }
        _ => {
            eprintln!("skipped: XAAS_TEST_DYNAMODB_ENDPOINT is not set (run tests/run)");
            None
        }
    }
}

/// The replicas' shared config: two CSV jobs on two sources, DynamoDB state, the webhook.
fn write_config(dir: &Path, sim: &SimHandle, endpoint: &str, prefix: &str) -> PathBuf {
    let job = |name: &str, source: &str| {
        let csv = dir.join(format!("{name}.csv"));
        config::job(name, source, &csv, "    leavers:\n      deactivate_missing: false\n")
    };
    let mut config = TestConfig::new(dir, &sim.base_url(), &dir.join("hr.csv"));
    config.state = format!(
        "  backend: dynamodb\n  table_prefix: {prefix}\n  region: us-east-1\n  endpoint_url: {endpoint}\n  lease_secs: {LEASE_SECS}\n"
    );
    config.serve_mut().extra = "  batch_window_ms: 200\n".into();
    config.serve_mut().after = format!(
        "  ui:\n    enabled: true\n    auth:\n      type: token\n      token: {UI_TOKEN}\n"
    );
    config.jobs = vec![job("hr", SOURCE_A), job("contractors", SOURCE_B)];
    config.write(&dir.join("xaas.yaml"))
}

/// What the replicas need to reach dynalite as AWS.
const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent/xaas-test"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/xaas-test"),
];

fn dynamo_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test");
    let conf = aws_sdk_dynamodb::config::Builder::new()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// The pid of the replica holding `source`'s unexpired lease (owner ids are
/// `{host}/{pid}/{random}`).
async fn lease_owner(client: &aws_sdk_dynamodb::Client, prefix: &str, source: &str) -> Option<u32> {
    let out = client
        .get_item()
        .table_name(format!("{prefix}leases"))
        .key("source", Av::S(source.into()))
        .consistent_read(true)
        .send()
        .await
        .ok()?;
    let item = out.item?;
    let expires: i64 = item.get("expires_at")?.as_n().ok()?.parse().ok()?;
    if expires < chrono::Utc::now().timestamp_millis() {
        return None;
    }
    item.get("owner")?.as_s().ok()?.split('/').nth(1)?.parse().ok()
}

/// What a source must end with: externalId → (status, profile).
type Expected = BTreeMap<String, (&'static str, BTreeMap<String, String>)>;

fn matches(sim: &SimHandle, source: &str, expected: &Expected) -> Result<(), String> {
    let snap = sim.snapshot();
    let users: HashMap<&str, _> = snap
        .users
        .iter()
        .filter(|u| u.identity_source_id == source)
        .map(|u| (u.external_id.as_str(), u))
        .collect();
    if users.len() != expected.len() {
        return Err(format!("{source}: {} users, expected {}", users.len(), expected.len()));
    }
    for (id, (status, profile)) in expected {
        let Some(u) = users.get(id.as_str()) else { return Err(format!("{source}: {id} missing")) };
        if u.status != *status || &u.profile != profile {
            return Err(format!("{source}: {id} is {} with {:?}", u.status, u.profile));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_two_sources_and_survive_the_death_of_an_owner() {
    let Some(endpoint) = endpoint() else { return };
    let test_started = Instant::now();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = xaas::sim::spawn(
        SimConfig {
            identity_sources: vec![SOURCE_A.into(), SOURCE_B.into()],
            clock_scale: 300.0,
            processing_delay: Duration::from_millis(20),
            rate_limit_per_minute: 100_000,
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("mr_{}_", uuid::Uuid::now_v7().simple());

    // The exports: 60 employees (hr → A), 40 contractors (contractors → B).
    let employees: Vec<Person> = (0..60).map(|i| Person::generate(i, true)).collect();
    let contractors: Vec<Person> = (1000..1040).map(|i| Person::generate(i, true)).collect();
    common::write_csv(&dir.path().join("hr.csv"), &employees);
    common::write_csv(&dir.path().join("contractors.csv"), &contractors);
    // Pushed people (not in the exports): hires, then some leave again.
    let pushed_a: Vec<Person> = (5000..5120).map(|i| Person::generate(i, true)).collect();
    let pushed_b: Vec<Person> = (7000..7080).map(|i| Person::generate(i, true)).collect();

    let config = write_config(dir.path(), &sim, &endpoint, &prefix);
    let tags: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
    let started = futures::future::join_all(
        tags.iter().map(|t| Serve::start(dir.path(), &config, t, AWS_ENV)),
    )
    .await;
    let mut replicas: Vec<Option<Serve>> = started.into_iter().map(Some).collect();
    let ddb = dynamo_client(&endpoint);
    let deadline = Instant::now() + Duration::from_secs(15);
    while lease_owner(&ddb, &prefix, SOURCE_A).await.is_none()
        || lease_owner(&ddb, &prefix, SOURCE_B).await.is_none()
    {
        assert!(Instant::now() < deadline, "no lease owners");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let http = reqwest::Client::new();
    let alive = |replicas: &Vec<Option<Serve>>| -> Vec<String> {
        replicas.iter().flatten().map(|r| r.base.clone()).collect()
    };
    let random = |bases: &[String]| bases[rand::random_range(0..bases.len())].clone();

    // Wave 1: trigger both pulls and push the hires, each to a random replica.
    let bases = alive(&replicas);
    for job in ["hr", "contractors"] {
        let (status, body) = signed_post(
            &http,
            &format!("{}/v1/jobs/{job}/trigger", random(&bases)),
            &serde_json::json!({}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let push = |job: &'static str, people: Vec<Person>, bases: Vec<String>| {
        let http = http.clone();
        async move {
            for chunk in people.chunks(4) {
                let body: Vec<serde_json::Value> = chunk.iter().map(Person::json).collect();
                let url = format!("{}/v1/jobs/{job}/records", random(&bases));
                let (status, resp) =
                    signed_post(&http, &url, &serde_json::Value::Array(body)).await;
                assert_eq!(status, 202, "{url}: {resp}");
            }
        }
    };
    tokio::join!(
        push("hr", pushed_a[..60].to_vec(), bases.clone()),
        push("contractors", pushed_b[..40].to_vec(), bases.clone()),
    );

    // Kill A's owner while it works: once A has had a session.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sim.snapshot().sessions.iter().any(|s| s.identity_source_id == SOURCE_A) {
        assert!(Instant::now() < deadline, "no session on A");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let owner = lease_owner(&ddb, &prefix, SOURCE_A).await.expect("A has an owner");
    let owner_b = lease_owner(&ddb, &prefix, SOURCE_B).await;
    println!("owners: {SOURCE_A} pid {owner}, {SOURCE_B} pid {owner_b:?}");
    let victim = replicas
        .iter()
        .position(|r| r.as_ref().is_some_and(|r| r.pid() == owner))
        .expect("the owner is one of the replicas");
    let killed_at = Instant::now();
    {
        replicas[victim].as_mut().unwrap().kill(); // SIGKILL
    }
    let victim_log = replicas[victim].as_ref().unwrap().log();
    replicas[victim] = None;
    println!("killed replica r{victim} (pid {owner}), the owner of {SOURCE_A}");

    // Wave 2, meanwhile, to the survivors: the other hires; once every hire is in Okta, some
    // of them leave; then a pull of A again. All to random survivors (a trigger is stored for
    // the owner, whichever replica receives it).
    let bases = alive(&replicas);
    let mut leavers_a: Vec<Person> = pushed_a[..30].to_vec();
    let mut leavers_b: Vec<Person> = pushed_b[..20].to_vec();
    leavers_a.iter_mut().for_each(|p| p.active = false);
    leavers_b.iter_mut().for_each(|p| p.active = false);
    let hired = |sim: &SimHandle, source: &str, people: &[Person]| {
        let snap = sim.snapshot();
        people.iter().all(|p| {
            snap.users.iter().any(|u| {
                u.identity_source_id == source && u.external_id == p.id && u.status == "ACTIVE"
            })
        })
    };
    let wave2 = async {
        tokio::join!(
            push("hr", pushed_a[60..].to_vec(), bases.clone()),
            push("contractors", pushed_b[40..].to_vec(), bases.clone()),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(hired(&sim, SOURCE_A, &pushed_a) && hired(&sim, SOURCE_B, &pushed_b)) {
            assert!(Instant::now() < deadline, "the hires did not all reach okta");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::join!(
            push("hr", leavers_a.clone(), bases.clone()),
            push("contractors", leavers_b.clone(), bases.clone()),
        );
        let (status, body) = signed_post(
            &http,
            &format!("{}/v1/jobs/hr/trigger", random(&bases)),
            &serde_json::json!({}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    };
    let takeover = async {
        loop {
            if let Some(pid) = lease_owner(&ddb, &prefix, SOURCE_A).await
                && pid != owner
            {
                return killed_at.elapsed();
            }
            assert!(killed_at.elapsed() < Duration::from_secs(30), "no takeover of A");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    let ((), takeover) = tokio::join!(wave2, takeover);
    println!(
        "takeover of {SOURCE_A}: {} ms after the SIGKILL (lease {LEASE_SECS} s)",
        takeover.as_millis()
    );
    assert!(
        // The lease, plus a poll per source the taker holds already, plus a poll.
        takeover <= Duration::from_secs(LEASE_SECS) + Duration::from_millis(1_500),
        "takeover took {takeover:?}, over the lease time"
    );

    // The end state.
    let mut expected_a: Expected = Expected::new();
    let mut expected_b: Expected = Expected::new();
    for p in &employees {
        expected_a.insert(p.id.clone(), ("ACTIVE", p.expected_profile()));
    }
    for p in &contractors {
        expected_b.insert(p.id.clone(), ("ACTIVE", p.expected_profile()));
    }
    for (people, expected, leavers) in
        [(&pushed_a, &mut expected_a, 30), (&pushed_b, &mut expected_b, 20)]
    {
        for (i, p) in people.iter().enumerate() {
            let status = if i < leavers { "DEACTIVATED" } else { "ACTIVE" };
            expected.insert(p.id.clone(), (status, p.expected_profile()));
        }
    }
    let open = |sim: &SimHandle| {
        sim.snapshot()
            .sessions
            .iter()
            .any(|s| matches!(s.status.as_str(), "CREATED" | "IN_PROGRESS" | "TRIGGERED"))
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let a = matches(&sim, SOURCE_A, &expected_a);
        let b = matches(&sim, SOURCE_B, &expected_b);
        if a.is_ok() && b.is_ok() && !open(&sim) {
            break;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = replicas.iter().flatten().map(Serve::log).collect();
            panic!(
                "the emulator does not hold the source state: {a:?} {b:?}\n--- killed:\n{victim_log}\n--- survivors:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let a stray late session show itself.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    matches(&sim, SOURCE_A, &expected_a).unwrap();
    matches(&sim, SOURCE_B, &expected_b).unwrap();

    let snap = sim.snapshot();
    // No concurrency or spacing violation, no duplicate externalId in a session.
    assert!(snap.violations.is_empty(), "{:#?}", snap.violations);
    // No two sessions of one source open at once: each was triggered (or cancelled) before
    // the next one of its source was created; the emulator refuses (and records) a create
    // while one is open.
    for source in [SOURCE_A, SOURCE_B] {
        let mut sessions: Vec<_> =
            snap.sessions.iter().filter(|s| s.identity_source_id == source).collect();
        sessions.sort_by(|a, b| a.created.cmp(&b.created));
        for pair in sessions.windows(2) {
            if let Some(t) = &pair[0].triggered {
                assert!(
                    t <= &pair[1].created,
                    "{source}: session {} was created at {} while {} was open (triggered {t})",
                    pair[1].id,
                    pair[1].created,
                    pair[0].id
                );
            }
        }
        println!("{source}: {} sessions", sessions.len());
    }
    let survivors: Vec<String> = replicas.iter().flatten().map(Serve::log).collect();
    assert!(
        survivors.iter().any(|l| l.contains("lease acquired") && l.contains(SOURCE_A)),
        "a survivor took A over"
    );

    // The history is shared: a replica that did not run hr's pull shows its runs, the run's
    // decisions and the pages.
    let owner_now = lease_owner(&ddb, &prefix, SOURCE_A).await.expect("A has an owner");
    let other = replicas
        .iter()
        .flatten()
        .find(|r| r.pid() != owner_now)
        .expect("a replica that does not hold A");
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", other.base);
        async move {
            let r = http.get(&url).bearer_auth(UI_TOKEN).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, runs) = get("/v1/runs?job=hr".into()).await;
    assert_eq!(status, 200, "{runs}");
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let pull = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["counts"]["created"].as_u64() >= Some(60))
        .unwrap_or_else(|| panic!("no run of hr that created the 60 employees: {runs}"));
    let id = pull["id"].as_i64().unwrap();
    let (status, detail) = get(format!("/v1/runs/{id}?decision=created&limit=100")).await;
    assert_eq!(status, 200, "{detail}");
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    let created = detail["decisions"]["items"].as_array().unwrap();
    assert!(created.len() >= 60, "{detail}");
    for page in ["/ui".to_string(), format!("/ui/runs/{id}"), "/ui/held".into()] {
        let (status, html) = get(page.clone()).await;
        assert_eq!(status, 200, "{page}: {html}");
        assert!(!html.contains("not supported"), "{page}: {html}");
    }
    println!("replica pid {} (not the owner) showed run {id} of hr", other.pid());

    // A signed push replayed to another replica: the first event, not applied again.
    let bases = alive(&replicas);
    let hire = Person::generate(9000, true);
    let push = SignedRequest::post("/v1/jobs/hr/records", &hire.json(), true);
    let (status, first) = push.send(&http, &bases[0]).await;
    assert_eq!(status, 202, "{first}");
    let imported = |sim: &SimHandle| {
        sim.snapshot().users.iter().find(|u| u.external_id == hire.id).map_or(0, |u| u.imports)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while imported(&sim) == 0 {
        assert!(Instant::now() < deadline, "the last hire did not reach okta");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, again) = push.send(&http, &bases[1]).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["event_id"], &again["duplicate"]),
        (&first["event_id"], &serde_json::json!(true))
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(imported(&sim), 1, "the replay was not imported again");
    println!("multi-replica test: {} ms", test_started.elapsed().as_millis());
}
