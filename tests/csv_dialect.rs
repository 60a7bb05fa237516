//! CSV dialect and bad input: quote character, declared columns, gzip, stdin, invalid UTF-8,
//! wrong column counts, and the `max_rejected` error budget through `xaas plan`.

mod common;

use std::io::Write;
use std::path::Path;

use futures::StreamExt;
use serde_json::json;
use xaas::mapping::{Origin, Record, Rejection};
use xaas::sources::Source;
use xaas::sources::csv::{CsvSource, CsvSourceConfig};

async fn pull(config: serde_json::Value, dir: &Path) -> (Vec<Record>, Vec<Rejection>) {
    let c: CsvSourceConfig = serde_json::from_value(config).unwrap();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let mut records = Vec::new();
    let mut rejections = Vec::new();
    let mut s = CsvSource::new(&c, dir).pull();
    while let Some(item) = s.next().await {
        match item.expect("no source error") {
            Ok(r) => records.push(r),
            Err(r) => rejections.push(r),
        }
    }
    (records, rejections)
}

#[tokio::test]
async fn semicolon_delimiter_and_single_quote() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("u.csv"), "id;name\n1;'Doe; Jane'\n2;'it''s'\n").unwrap();
    let (r, rej) = pull(json!({"path": "u.csv", "delimiter": ";", "quote": "'"}), dir.path()).await;
    assert!(rej.is_empty());
    assert_eq!(r[0].fields["name"], "Doe; Jane");
    assert_eq!(r[1].fields["name"], "it's");
}

#[tokio::test]
async fn declared_columns_without_a_header_row() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("u.csv"), "1,Ann\n2,Bob\n").unwrap();
    let (r, _) =
        pull(json!({"path": "u.csv", "header": false, "columns": ["id", " name "]}), dir.path())
            .await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].fields["name"], "Ann");
    assert_eq!(r[0].origin, Origin::Line(1), "no header: data starts on line 1");
}

#[tokio::test]
async fn declared_columns_replace_the_header_row() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("u.csv"), "ID , Full Name\n1,Ann\n").unwrap();
    let (r, _) = pull(json!({"path": "u.csv", "columns": ["id", "name"]}), dir.path()).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].fields["name"], "Ann");
    assert_eq!(r[0].origin, Origin::Line(2));
}

#[tokio::test]
async fn header_names_are_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("u.csv"), " id ,\tname \n1,Ann\n").unwrap();
    let (r, _) = pull(json!({"path": "u.csv"}), dir.path()).await;
    assert_eq!(r[0].fields["name"], "Ann");
}

#[tokio::test]
async fn gzip_files_are_read_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.path().join("u.csv.gz")).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(b"id,name\r\n1,Ann\r\n2,Bob\r\n").unwrap();
    gz.finish().unwrap();
    let (r, _) = pull(json!({"path": "u.csv.gz"}), dir.path()).await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].origin, Origin::Line(3));
}

#[tokio::test]
async fn a_corrupt_gzip_file_makes_the_pull_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("u.csv.gz"), b"\x1f\x8b\x08\x00garbage").unwrap();
    let c: CsvSourceConfig = serde_json::from_value(json!({"path": "u.csv.gz"})).unwrap();
    let items: Vec<_> = CsvSource::new(&c, dir.path()).pull().collect().await;
    assert!(items.iter().any(|i| i.is_err()), "a corrupt gzip stream must end the pull");
}

#[tokio::test]
async fn invalid_utf8_is_rejected_with_its_line_and_wrong_counts_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("u.csv"), b"id,name\n1,Ann\n2,B\xffb\n3\n4,Dan\n").unwrap();
    let (r, rej) = pull(json!({"path": "u.csv"}), dir.path()).await;
    assert_eq!(r.len(), 2);
    assert_eq!(rej.len(), 2);
    assert_eq!(rej[0].origin, Origin::Line(3));
    assert!(rej[0].to_string().contains("line 3"), "{}", rej[0]);
    assert!(rej[0].reason.contains("not valid utf-8"), "{}", rej[0]);
    assert_eq!(rej[1].origin, Origin::Line(4));
    assert!(rej[1].reason.contains("expected 2 fields"), "{}", rej[1]);
}

#[test]
fn header_false_without_columns_is_a_config_error() {
    let c: CsvSourceConfig =
        serde_json::from_value(json!({"path": "u.csv", "header": false})).unwrap();
    assert_eq!(c.validate()[0].0, "columns");
    let c: CsvSourceConfig =
        serde_json::from_value(json!({"path": "u.csv", "quote": ","})).unwrap();
    assert_eq!(c.validate()[0].0, "quote");
}

fn config(dir: &Path, path: &str, extra: &str) -> std::path::PathBuf {
    let p = dir.join("xaas.yaml");
    std::fs::write(
        &p,
        format!(
            "okta:\n  org_url: http://127.0.0.1:9\n  auth:\n    type: api_token\n    token: x\njobs:\n  - name: hr\n    identity_source_id: {}\n    source:\n      type: csv\n      path: \"{path}\"\n    mapping: {}\n{extra}",
            common::SOURCE,
            common::mapping_path().display()
        ),
    )
    .unwrap();
    p
}

fn people_csv(n: usize, bad_every: usize) -> String {
    let mut s = format!("{}\n", common::HEADER);
    for i in 0..n {
        if bad_every > 0 && i % bad_every == 0 {
            s.push_str("broken,row\n");
        } else {
            s.push_str(&common::Person::generate(i, true).csv_row());
            s.push('\n');
        }
    }
    s
}

#[test]
fn stdin_is_read_with_a_dash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "-", "");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xaas"))
        .args(["plan", "--config", cfg.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(people_csv(30, 0).as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("read 30, rejected 0"), "{stdout}");
}

#[test]
fn error_budget_as_a_percentage_aborts_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("u.csv"), people_csv(100, 10)).unwrap();
    // 10 % rejected: over 5 %, within 15 %.
    let over = config(dir.path(), "u.csv", "    max_rejected: 5%\n");
    let out = common::xaas(&["plan", "--config", over.to_str().unwrap()], "x");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("10 of 100 record(s) rejected (10.00%), over max_rejected: 5%"),
        "{stdout}"
    );
    let within = config(dir.path(), "u.csv", "    max_rejected: 15%\n");
    let out = common::xaas(&["plan", "--config", within.to_str().unwrap()], "x");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn error_budget_as_a_count_stops_the_pull() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("u.csv"), people_csv(100, 10)).unwrap();
    let cfg = config(dir.path(), "u.csv", "    max_rejected: 3\n");
    let out = common::xaas(&["plan", "--config", cfg.to_str().unwrap()], "x");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("more than 3 record(s) rejected"), "{stdout}");
    assert!(stdout.contains("rejected 4"), "stops at the 4th rejection: {stdout}");
}

#[test]
fn a_bad_budget_and_an_unknown_source_type_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "u.csv", "    max_rejected: lots\n");
    let out = common::xaas(&["validate", "--config", cfg.to_str().unwrap()], "x");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("max_rejected must be a count"), "{stderr}");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("type: csv", "type: ftp")
        .replace("lots", "5");
    std::fs::write(&cfg, text).unwrap();
    let out = common::xaas(&["validate", "--config", cfg.to_str().unwrap()], "x");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`csv`, `dynamodb`, `http`"), "{stderr}");
}

/// `xaas plan --format json` of `u.csv` in `dir`, allowing rejections (so exit 3).
fn plan_with_rejections(dir: &Path) -> serde_json::Value {
    let cfg = config(dir, "u.csv", "    max_rejected: 50%\n");
    let out = common::xaas(&["plan", "--config", cfg.to_str().unwrap(), "--format", "json"], "x");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The line of each of a planned job's rejections, in report order.
fn rejected_lines(job: &serde_json::Value) -> Vec<u64> {
    job["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["origin"]["line"].as_u64().unwrap())
        .collect()
}

/// The pull maps records on several workers, in batches of 512, while the source reads
/// ahead; the plan must not show it: rejections in line order, a duplicate whose versions lie
/// in three batches keeps its first place and its last version, and the sessions hold every
/// user once, in first-seen order.
#[test]
fn records_mapped_in_parallel_batches_keep_their_order_and_the_last_row_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<String> = Vec::new();
    let mut expected_rejected = Vec::new();
    let mut order: Vec<String> = Vec::new();
    for i in 0..5_000 {
        if i % 997 == 0 {
            expected_rejected.push(i as u64 + 2);
            rows.push("broken,row".into());
            continue;
        }
        let p = common::Person::generate(i, true);
        order.push(p.id.clone());
        rows.push(p.csv_row());
    }
    // Two later versions of person 5 (line 7), in two later batches.
    let mut again = common::Person::generate(5, true);
    again.title = "Prof".into();
    rows.insert(2_500, again.csv_row());
    again.title = "Dame".into();
    rows.insert(4_900, again.csv_row());
    let text = format!("{}\n{}\n", common::HEADER, rows.join("\n"));
    std::fs::write(dir.path().join("u.csv"), text).unwrap();
    // The inserted rows shift the later rejections.
    let expected_rejected: Vec<u64> = expected_rejected
        .into_iter()
        .map(|l| l + u64::from(l > 2_501) + u64::from(l > 4_901))
        .collect();
    let plan = plan_with_rejections(dir.path());
    let job = &plan[0];
    assert_eq!(rejected_lines(job), expected_rejected);
    let dup = &job["deduplicated"];
    assert_eq!(dup.as_array().unwrap().len(), 1, "{dup}");
    assert_eq!(dup[0]["external_id"], again.id);
    assert_eq!(dup[0]["kept"]["line"], 4_902);
    assert_eq!(dup[0]["dropped"], serde_json::json!([{"line": 7}, {"line": 2_502}]));
    let mut sent: Vec<String> = Vec::new();
    let mut title_of_5 = None;
    for session in job["sessions"].as_array().unwrap() {
        for request in session["requests"].as_array().unwrap() {
            for user in request["users"].as_array().unwrap() {
                let id = user["externalId"].as_str().unwrap().to_string();
                if id == again.id {
                    title_of_5 = user["profile"]["title"].as_str().map(str::to_string);
                }
                sent.push(id);
            }
        }
    }
    assert_eq!(sent, order, "every user once, in first-seen order");
    assert_eq!(title_of_5.as_deref(), Some("Dame"), "the last row wins");
}

/// The reader splits the file into rows on one thread and turns them into records in batches
/// of 512 on several: quoted fields over two to four lines (CRLF and LF) right at the batch
/// boundaries, rows of the wrong length, a field that is not UTF-8 and a record the mapping
/// rejects must all keep their exact start line, and the users their file order.
#[test]
fn rows_converted_in_parallel_keep_exact_lines_across_multi_line_fields_at_batch_edges() {
    let dir = tempfile::tempdir().unwrap();
    let mut text: Vec<u8> = format!("{}\r\n", common::HEADER).into_bytes();
    let mut line = 2u64; // where the next row starts
    let mut rejected = Vec::new();
    let mut order = Vec::new();
    // Every `i` is one row, good or not: what the batches count.
    for i in 0..6_000usize {
        let mut p = common::Person::generate(i, true);
        if matches!(i % 512, 509..=511 | 0..=1) || i % 37 == 0 {
            let sep = if i % 2 == 0 { "\r\n" } else { "\n" };
            let parts: Vec<String> = (0..2 + i % 3).map(|k| format!("Calle {k}")).collect();
            p.street_name = parts.join(sep);
        }
        let spans = 1 + p.street_name.matches('\n').count() as u64;
        let mut row = p.csv_row().into_bytes();
        match i % 211 {
            3 => {
                // One field short (the last), after a field over several lines.
                let cut = row.iter().rposition(|&b| b == b',').unwrap();
                row.truncate(cut);
                rejected.push(line);
            }
            7 => {
                // Not UTF-8 in the first name.
                let at = row.iter().position(|&b| b == b',').unwrap() + 1;
                let at = at + row[at..].iter().position(|&b| b == b',').unwrap() + 1;
                let at = at + row[at..].iter().position(|&b| b == b',').unwrap() + 1;
                row.insert(at, 0xFF);
                rejected.push(line);
            }
            11 => {
                // No email: the mapping rejects it (a required attribute).
                p.email.clear();
                row = p.csv_row().into_bytes();
                rejected.push(line);
            }
            _ => order.push(p.id.clone()),
        }
        text.extend_from_slice(&row);
        text.extend_from_slice(if i % 5 == 0 { b"\n" } else { b"\r\n" });
        line += spans;
    }
    std::fs::write(dir.path().join("u.csv"), &text).unwrap();
    let plan = plan_with_rejections(dir.path());
    let job = &plan[0];
    let got = rejected_lines(job);
    assert_eq!(got.len(), rejected.len(), "{}", job["rejected"]);
    assert_eq!(got, rejected, "every rejection on the line its row starts on");
    let sent: Vec<&str> = job["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["requests"].as_array().unwrap())
        .flat_map(|r| r["users"].as_array().unwrap())
        .map(|u| u["externalId"].as_str().unwrap())
        .collect();
    assert_eq!(sent, order, "every user once, in file order");
}
