//! The CSV source on real files: quoting, line numbers, bad rows, bad files, big files.

use std::io::Write;
use std::path::Path;

use futures::StreamExt;
use serde_json::Value;
use xaas::mapping::{Origin, Record, Rejection};
use xaas::sources::csv::{CsvSource, CsvSourceConfig};
use xaas::sources::{Source, SourceError, SourceItem};

fn config(path: &Path) -> CsvSourceConfig {
    serde_json::from_value(serde_json::json!({ "path": path })).unwrap()
}

fn write(dir: &tempfile::TempDir, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join("users.csv");
    std::fs::write(&path, bytes).unwrap();
    path
}

async fn pull_all(path: &Path) -> Vec<Result<SourceItem, SourceError>> {
    CsvSource::new(&config(path), Path::new("/")).pull().collect().await
}

/// Pull a file that must read completely; split into records and rejections.
async fn pull_ok(bytes: &[u8]) -> (Vec<Record>, Vec<Rejection>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, bytes);
    let mut records = Vec::new();
    let mut rejections = Vec::new();
    for item in pull_all(&path).await {
        match item.expect("no source error") {
            Ok(r) => records.push(r),
            Err(r) => rejections.push(r),
        }
    }
    (records, rejections)
}

fn field<'a>(r: &'a Record, name: &str) -> &'a str {
    match &r.fields[name] {
        Value::String(s) => s,
        other => panic!("{name} is not a string: {other}"),
    }
}

#[tokio::test]
async fn quoting_with_commas_and_quotes() {
    let (records, rejections) =
        pull_ok(b"id,name,street\n1,\"Doe, Jane\",\"12 \"\"Old\"\" Road\"\n2,plain,\n").await;
    assert!(rejections.is_empty());
    assert_eq!(records.len(), 2);
    assert_eq!(field(&records[0], "name"), "Doe, Jane");
    assert_eq!(field(&records[0], "street"), "12 \"Old\" Road");
    assert_eq!(records[0].origin, Origin::Line(2));
    // Empty cells are empty strings (the mapping omits them).
    assert_eq!(field(&records[1], "street"), "");
    assert_eq!(records[1].origin, Origin::Line(3));
}

#[tokio::test]
async fn quoted_newlines_keep_later_line_numbers_right() {
    let (records, _) = pull_ok(
        b"id,address\n1,\"line one\nline two\nline three\"\n2,single\n3,\"a\r\nb\"\n4,last\n",
    )
    .await;
    let lines: Vec<_> = records.iter().map(|r| (field(r, "id"), r.origin.clone())).collect();
    assert_eq!(
        lines,
        [
            ("1", Origin::Line(2)),
            ("2", Origin::Line(5)),
            ("3", Origin::Line(6)),
            ("4", Origin::Line(8)),
        ]
    );
    assert_eq!(field(&records[0], "address"), "line one\nline two\nline three");
}

#[tokio::test]
async fn crlf_line_endings() {
    let (records, rejections) = pull_ok(b"id,name\r\n1,Ann\r\n2,Bob\r\n").await;
    assert!(rejections.is_empty());
    assert_eq!(records.len(), 2);
    assert_eq!(field(&records[1], "name"), "Bob", "no stray \\r");
    assert_eq!(records[1].origin, Origin::Line(3));
    assert_eq!(records[1].fields.keys().collect::<Vec<_>>(), ["id", "name"]);

    // The csv crate's own line numbers lag after CRLF; ours must not, also across quoted
    // CRLFs, blank lines and rejected rows.
    let (records, rejections) =
        pull_ok(b"id,name\r\n1,\"A\r\nnn\"\r\n\r\n\r\n2,Bob\r\nbad\r\n3,C\r\n").await;
    let lines: Vec<_> = records.iter().map(|r| (field(r, "id"), r.origin.clone())).collect();
    assert_eq!(lines, [("1", Origin::Line(2)), ("2", Origin::Line(6)), ("3", Origin::Line(8))]);
    assert_eq!(rejections[0].origin, Origin::Line(7));
}

#[tokio::test]
async fn blank_lines_are_skipped_and_counted() {
    let (records, rejections) = pull_ok(b"id\n1\n\n\n2\n\n3").await;
    assert!(rejections.is_empty());
    let lines: Vec<_> = records.iter().map(|r| (field(r, "id"), r.origin.clone())).collect();
    assert_eq!(lines, [("1", Origin::Line(2)), ("2", Origin::Line(5)), ("3", Origin::Line(7))]);
}

#[tokio::test]
async fn utf8_bom_is_not_part_of_the_first_header() {
    let (records, _) = pull_ok(b"\xEF\xBB\xBFid,name\n1,J\xC3\xBCrgen\n").await;
    assert_eq!(records[0].fields.keys().collect::<Vec<_>>(), ["id", "name"]);
    assert!(!records[0].fields.contains_key("\u{feff}id"));
    assert_eq!(field(&records[0], "id"), "1");
    assert_eq!(field(&records[0], "name"), "Jürgen");
    // Even when the first header is quoted.
    let (records, _) = pull_ok(b"\xEF\xBB\xBF\"id\",name\n1,x\n").await;
    assert_eq!(field(&records[0], "id"), "1");
}

#[tokio::test]
async fn headers_are_trimmed() {
    let (records, _) = pull_ok(b" id , name\n1,x\n").await;
    assert_eq!(records[0].fields.keys().collect::<Vec<_>>(), ["id", "name"]);
}

#[tokio::test]
async fn wrong_field_count_rejects_that_row_only() {
    let (records, rejections) = pull_ok(b"id,name\n1,a\n2\n3,c,extra\n4,d\n").await;
    assert_eq!(records.iter().map(|r| field(r, "id")).collect::<Vec<_>>(), ["1", "4"]);
    assert_eq!(rejections.len(), 2);
    assert_eq!(rejections[0].origin, Origin::Line(3));
    assert_eq!(rejections[0].reason, "expected 2 fields (one per header column), found 1");
    assert_eq!(rejections[1].origin, Origin::Line(4));
    assert_eq!(rejections[1].reason, "expected 2 fields (one per header column), found 3");
}

#[tokio::test]
async fn invalid_utf8_rejects_that_row_only() {
    let (records, rejections) = pull_ok(b"id,name\n1,ok\n2,bad\xFF\xFE\n3,ok\n").await;
    assert_eq!(records.len(), 2);
    assert_eq!(rejections.len(), 1);
    assert_eq!(rejections[0].origin, Origin::Line(3));
    assert_eq!(rejections[0].field.as_deref(), Some("name"));
    assert_eq!(rejections[0].reason, "field `name` is not valid utf-8");
}

#[tokio::test]
async fn missing_file_is_an_open_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.csv");
    let items = pull_all(&path).await;
    assert_eq!(items.len(), 1);
    match &items[0] {
        Err(e @ SourceError::Open { path: p, .. }) => {
            assert_eq!(p, &path.display().to_string());
            assert!(e.to_string().contains("nope.csv"), "{e}");
        }
        other => panic!("expected an open error, got {other:?}"),
    }
}

#[tokio::test]
async fn relative_paths_resolve_against_the_base_dir() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, b"id\n1\n");
    let config = config(Path::new("users.csv"));
    let items: Vec<_> = CsvSource::new(&config, dir.path()).pull().collect().await;
    assert_eq!(items.len(), 1);
    assert!(matches!(&items[0], Ok(Ok(_))));
}

async fn header_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, bytes);
    let items = pull_all(&path).await;
    assert_eq!(items.len(), 1, "the pull stops at a bad header");
    match &items[0] {
        Err(e @ SourceError::Read { path: p, .. }) => {
            assert_eq!(p, &path.display().to_string());
            e.to_string()
        }
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_headers_fail_the_pull_naming_file_and_column() {
    let e = header_error(b"id,name,email,name\n1,a,b,c\n").await;
    assert!(e.contains("users.csv"), "{e}");
    assert!(e.ends_with("header column 4 repeats the name `name` of column 2"), "{e}");
    let e = header_error(b"id, ,email\n").await;
    assert!(e.ends_with("header column 2 has an empty name"), "{e}");
    let e = header_error(b"id,na\xFFme\n").await;
    assert!(e.ends_with("header column 2 is not valid utf-8"), "{e}");
    let e = header_error(b"").await;
    assert!(e.ends_with("the file is empty, expected a header row"), "{e}");
}

#[tokio::test]
async fn header_only_file_has_no_records() {
    let (records, rejections) = pull_ok(b"id,name\n").await;
    assert!(records.is_empty() && rejections.is_empty());
}

#[tokio::test]
async fn custom_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, b"id;name\n1;\"a;b\"\n");
    let config: CsvSourceConfig =
        serde_json::from_value(serde_json::json!({ "path": path, "delimiter": ";" })).unwrap();
    let items: Vec<_> = CsvSource::new(&config, Path::new("/")).pull().collect().await;
    let record = items.into_iter().next().unwrap().unwrap().unwrap();
    assert_eq!(field(&record, "name"), "a;b");

    let tab: CsvSourceConfig =
        serde_json::from_value(serde_json::json!({ "path": "x", "delimiter": "\t" })).unwrap();
    assert_eq!(tab.delimiter.byte(), b'\t');
    for bad in ["", ";;", "é", "\""] {
        let r: Result<CsvSourceConfig, _> =
            serde_json::from_value(serde_json::json!({ "path": "x", "delimiter": bad }));
        assert!(r.is_err(), "{bad:?} accepted");
    }
    let default: CsvSourceConfig =
        serde_json::from_value(serde_json::json!({ "path": "x" })).unwrap();
    assert_eq!(default.delimiter.byte(), b',');
}

#[tokio::test]
async fn a_large_file_streams() {
    const ROWS: usize = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(f, "id,active,email,first_name").unwrap();
        for i in 0..ROWS {
            writeln!(f, "{i},true,user{i}@example.com,Name{i}").unwrap();
        }
    }
    // Count without collecting: only the channel's bounded buffer is ever in memory.
    let mut stream = CsvSource::new(&config(&path), Path::new("/")).pull();
    let mut count = 0usize;
    let mut last_line = 0;
    while let Some(item) = stream.next().await {
        let record = item.unwrap().unwrap();
        if let Origin::Line(l) = record.origin {
            last_line = l;
        }
        count += 1;
    }
    assert_eq!(count, ROWS);
    assert_eq!(last_line, ROWS as u64 + 1);
}

#[tokio::test]
async fn dropping_the_stream_early_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id\n");
    for i in 0..10_000 {
        text.push_str(&format!("{i}\n"));
    }
    let path = write(&dir, text.as_bytes());
    let source = CsvSource::new(&config(&path), Path::new("/"));
    let first: Vec<_> = source.pull().take(3).collect().await;
    assert_eq!(first.len(), 3);
    // The reader noticed the closed channel and stopped; a second pull starts afresh.
    let all: Vec<_> = source.pull().collect().await;
    assert_eq!(all.len(), 10_000);
}
