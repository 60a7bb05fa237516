//! `jobs[].max_memory_mb` through `xaas run` against the emulator: a limit smaller than what
//! the pull holds stops the run before anything reaches Okta, with the figures in the error
//! and `failure: out_of_memory`; a limit with room imports as usual.

mod common;

use common::{Person, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_over_the_memory_limit_sends_nothing_and_names_the_figures() {
    let sim = common::start_sim(300.0).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let people: Vec<Person> = (0..21_000).map(|i| Person::generate(i, true)).collect();
    common::write_csv(&csv, &people);

    // 4 MiB: less than any process holds, so the check after 20,000 records stops it.
    let run =
        common::run_csv(dir.path(), &sim.base_url(), &csv, "    max_memory_mb: 4\n", TOKEN).await;
    assert_ne!(run.out.status.code(), Some(0), "{}", run.stderr());
    let job = &run.report()["jobs"][0];
    assert_eq!(job["outcome"], "failed", "{job}");
    assert_eq!(job["failure"], "out_of_memory", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("after 20000 records"), "{error}");
    assert!(error.contains("memory limit of 4 MiB (max_memory_mb: 4)"), "{error}");
    assert!(error.contains("nothing was sent"), "{error}");
    let snap = sim.snapshot();
    assert!(snap.sessions.is_empty() && snap.users.is_empty(), "nothing reached okta");
    assert_eq!(snap.requests_total, 0, "not even a session list");

    // With room, the same pull imports.
    let run =
        common::run_csv(dir.path(), &sim.base_url(), &csv, "    max_memory_mb: 4096\n", TOKEN)
            .await;
    let job = &run.report()["jobs"][0];
    assert_eq!(job["outcome"], "success", "{job}\n{}", run.stderr());
    assert_eq!(sim.snapshot().users.len(), 21_000);
}
