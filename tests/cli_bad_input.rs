//! Bad input gets a clear result, and the other records still go through.

mod common;

use common::*;

/// One CSV with a malformed row, a missing externalId, an invalid email, an over-long first
/// name and a duplicate id: each is reported with its line, the good rows are imported, and
/// the exit code says "completed with rejected records".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_rejected_with_line_and_reason_while_the_rest_import() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let good: Vec<Person> = (0..20).map(|i| Person::generate(i, true)).collect();
    let mut lines = vec![HEADER.to_string()];
    lines.extend(good.iter().map(Person::csv_row)); // lines 2..=21
    lines.push("broken@example.com,true,Mr,Only,Three".into()); // line 22: too few fields
    let mut no_id = Person::generate(100, true);
    no_id.id = String::new();
    lines.push(no_id.csv_row()); // line 23
    let mut bad_email = Person::generate(101, true);
    bad_email.email = "not-an-email".into();
    lines.push(bad_email.csv_row()); // line 24
    let mut long_name = Person::generate(102, true);
    long_name.first = "A".repeat(51);
    lines.push(long_name.csv_row()); // line 25
    let mut dup = Person::generate(3, true);
    dup.city = "Bilbao".into();
    lines.push(dup.csv_row()); // line 26: duplicate of line 5
    let csv = dir.path().join("users.csv");
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let run = run_csv(dir.path(), &sim.base_url(), &csv, "", TOKEN).await;
    let out = &run.out;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let report = run.report();
    let job = &report["jobs"][0];
    assert_eq!(job["outcome"], "completed_with_rejections");
    assert_eq!(job["counts"]["read"], 25);
    assert_eq!(job["counts"]["rejected"], 4);
    assert_eq!(job["counts"]["deduplicated"], 1);
    assert_eq!(job["counts"]["upserted"], 20);
    let rejected = job["rejected"].as_array().unwrap();
    let at = |line: u64| {
        rejected
            .iter()
            .find(|r| r["origin"]["line"] == line)
            .unwrap_or_else(|| panic!("no rejection for line {line}: {rejected:#?}"))
    };
    assert!(at(22)["reason"].as_str().unwrap().contains("field"), "{}", at(22));
    assert!(
        at(23)["reason"].as_str().unwrap().contains("externalId")
            || at(23)["field"] == "externalId",
        "{}",
        at(23)
    );
    assert_eq!(at(24)["field"], "email");
    assert_eq!(at(25)["field"], "firstName");
    assert!(at(25)["reason"].as_str().unwrap().contains("50"), "{}", at(25));
    assert_eq!(job["deduplicated"][0]["kept"]["line"], 26);
    assert_eq!(job["deduplicated"][0]["dropped"][0]["line"], 5);
    assert!(stdout.contains("rejected line 24"), "{stdout}");

    let snap = sim.snapshot();
    assert!(snap.violations.is_empty(), "{:#?}", snap.violations);
    assert_eq!(snap.users.len(), 20);
    let bilbao = snap.users.iter().find(|u| u.external_id == dup.id).unwrap();
    assert_eq!(bilbao.profile["city"], "Bilbao");
}

#[test]
fn missing_csv_file_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("no-such-export.csv");
    // Nothing listens here: the pull fails before any Okta call.
    let config = write_config(dir.path(), "http://127.0.0.1:9", &csv, 1.0, "");
    let out = xaas(&["run", "--config", &config.display().to_string()], TOKEN);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no-such-export.csv"), "{stdout}");
    assert!(stdout.contains("nothing was sent"), "{stdout}");
}

#[test]
fn unknown_config_key_is_reported_with_line_and_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    std::fs::write(&csv, format!("{HEADER}\n")).unwrap();
    let config = dir.path().join("xaas.yaml");
    std::fs::write(
        &config,
        format!(
            "okta:\n  org_url: https://example.okta.com\n  auth:\n    type: api_token\n    token_env: T\njobs:\n  - name: hr\n    identity_sorce_id: 0oa1\n    source:\n      type: csv\n      path: {}\n    mapping: {}\n",
            csv.display(),
            mapping_path().display()
        ),
    )
    .unwrap();
    for cmd in ["validate", "run"] {
        let out = xaas(&[cmd, "--config", &config.display().to_string()], TOKEN);
        assert_eq!(out.status.code(), Some(4), "{cmd}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}:8:5: jobs[0].identity_sorce_id: unknown key `identity_sorce_id` (did you mean `identity_source_id`?)", config.display())),
            "{cmd}: {stderr}"
        );
    }
}

#[test]
fn validate_reports_every_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xaas.yaml");
    std::fs::write(
        &config,
        "okta:\n  org_url: http://example.okta.com\n  auth:\n    type: api_token\n  request_timeout_secs: 0\njobs:\n  - name: hr job\n    identity_source_id: ''\n    schedule: 'every day'\n    source:\n      type: csv\n      path: x.csv\n    mapping: nope.yaml\n",
    )
    .unwrap();
    let out = xaas(&["validate", "--config", &config.display().to_string()], "");
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        ":2:3: okta.org_url: `http://example.okta.com/` must use https://",
        ":3:3: okta.auth: give the api token as one of",
        ":5:3: okta.request_timeout_secs: must be greater than 0",
        ":7:5: jobs[0].name: `hr job` is not a valid job name",
        ":8:5: jobs[0].identity_source_id: missing",
        ":9:5: jobs[0].schedule: invalid cron expression",
        ":13:5: jobs[0].mapping: cannot read mapping file",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(stderr.contains("7 problem(s) found"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_gives_a_clear_auth_error_without_printing_the_token() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    write_csv(&csv, &[Person::generate(1, true)]);
    let secret = "00wrongTOKENvalue-5f3a9c";
    let run = run_csv(dir.path(), &sim.base_url(), &csv, "", secret).await;
    let out = &run.out;
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = std::fs::read_to_string(&run.report_path).unwrap();
    assert!(stdout.to_lowercase().contains("token"), "{stdout}");
    assert!(stdout.contains("401"), "{stdout}");
    for text in [&*stdout, &*stderr, &report] {
        assert!(!text.contains(secret), "token leaked:\n{text}");
    }
    assert!(sim.snapshot().users.is_empty());
}

#[test]
fn token_env_not_set_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    write_csv(&csv, &[Person::generate(1, true)]);
    let config = write_config(dir.path(), "http://127.0.0.1:9", &csv, 1.0, "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
        .args(["run", "--config", &config.display().to_string()])
        .env_remove("XAAS_TEST_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("XAAS_TEST_TOKEN"), "{stderr}");
}

/// Logs written to a file carry no ANSI escape codes: colour is for a terminal only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_written_to_a_file_carry_no_escape_codes() {
    let sim = start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("users.csv");
    let people: Vec<Person> = (0..5).map(|i| Person::generate(i, true)).collect();
    write_csv(&csv, &people);
    let config = write_config(dir.path(), &sim.base_url(), &csv, 1.05, "").display().to_string();
    let log = dir.path().join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
            .args(["run", "--config", &config])
            .env("XAAS_TEST_TOKEN", TOKEN)
            .env("XAAS_LOG", "xaas=debug")
            .env_remove("NO_COLOR")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read(&log).unwrap();
    assert!(text.len() > 200, "the run logged: {}", String::from_utf8_lossy(&text));
    assert!(
        !text.contains(&0x1b),
        "an escape byte in the log:\n{}",
        String::from_utf8_lossy(&text)
    );
}
