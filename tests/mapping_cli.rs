//! The mapping commands through the real binary: `xaas validate` on a mapping with five
//! mistakes, and `xaas mapping test` exit codes and diffs.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn xaas(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xaas")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const FIVE_MISTAKES: &str = r#"version: 2
source_fields: [id, active, first_name, last_name, email]
external_id: id
status:
  active_if: active == "true"
attributes:
  userName: email
  firstName: "{{ first_name | lowr }}"
  lastName: "{{ last_name | upper }"
  title: "{{ job_title }}"
  employeeNumber: 42
groups:
  - external_id: "dept-{{ id }}"
    nmae: Department
"#;

#[test]
fn validate_reports_five_mistakes_with_line_column_and_snippet() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("hr.yaml");
    std::fs::write(&mapping, FIVE_MISTAKES).unwrap();
    let csv = Path::new(ROOT).join("sample-data/users.csv");
    let config = dir.path().join("xaas.yaml");
    std::fs::write(
        &config,
        format!(
            "okta:\n  org_url: https://example.okta.com\n  auth:\n    type: api_token\n    token: x\n\
             jobs:\n  - name: hr\n    identity_source_id: 0oa1\n    source:\n      type: csv\n      \
             path: {}\n    mapping: hr.yaml\n",
            csv.display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = xaas(&["validate", "--config", &config.display().to_string()]);
    assert_eq!(code, 4, "{stderr}");
    let m = mapping.display().to_string();
    for (at, what) in [
        ("8:3: attributes.firstName", "did you mean `lower`?"),
        ("9:3: attributes.lastName", "syntax error"),
        ("10:3: attributes.title", "not one of the declared `source_fields`"),
        ("11:3: attributes.employeeNumber", "found a number"),
        ("14:5: groups[0].nmae", "did you mean `name`?"),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("{m}:{at}")))
            .unwrap_or_else(|| panic!("no {at} in:\n{stderr}"));
        assert!(line.contains(what), "{line}");
    }
    assert!(stderr.contains("8 |   firstName: \"{{ first_name | lowr }}\"\n  |   ^"), "{stderr}");
    assert!(stderr.contains("6 problem(s) found"), "{stderr}");
}

#[test]
fn mapping_test_passes_on_the_examples_and_fails_with_a_diff() {
    let (code, stdout, stderr) =
        xaas(&["mapping", "test", &format!("{ROOT}/mappings/http-hris.yaml")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("0 failed"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 2\nexternal_id: id\nstatus: { active_if: \"true\" }\nattributes: { userName: u }\n\
         tests:\n  - name: wrong name\n    input: { id: \"1\", u: ann }\n    expect: { profile: { userName: anne } }\n",
    )
    .unwrap();
    let (code, stdout, _) = xaas(&["mapping", "test", &bad.display().to_string()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("profile.userName:\n    - \"anne\"\n    + \"ann\""), "{stdout}");

    std::fs::write(&bad, "version: 2\nexternal_id: id\n").unwrap();
    let (code, _, stderr) = xaas(&["mapping", "test", &bad.display().to_string()]);
    assert_eq!(code, 4, "{stderr}");
}
