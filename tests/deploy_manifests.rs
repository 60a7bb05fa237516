//! The deployment files (`deploy/`) checked against the code they deploy.
//!
//! No cluster and no Docker daemon are needed: every YAML document under `deploy/k8s/` and
//! `deploy/compose.yaml` is parsed into JSON values and the fields that matter are asserted
//! (kinds, selectors, ports, probes, hardening, images, grace periods). The configs they
//! embed are loaded by the `xaas` binary itself (`xaas validate`, i.e. `settings::load`,
//! with exactly the environment the workload gives it), so a manifest cannot drift from what
//! the code accepts. The Dockerfile is checked as text: stages, user, health check, build
//! command, shipped mappings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The image every manifest runs; the Dockerfile's documented `docker build -t` publishes it.
const IMAGE: &str = "ghcr.io/xaas/xaas";
/// The release build, as `deploy/build.sh` runs it and the operator's guide documents it.
const BUILD_COMMAND: &str = "cargo build --release --locked --bin xaas";
/// The port `xaas serve` listens on in the image (`serve.listen`, `EXPOSE`).
const HTTP_PORT: u64 = 8080;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every YAML document of a file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&read(rel))
        .unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn yaml_one(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

/// Every Kubernetes object under `deploy/k8s/` (the kustomization excluded), with its file.
fn k8s_objects() -> Vec<(String, Value)> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("deploy/k8s"))
        .expect("deploy/k8s exists")
        .map(|e| e.expect("readable dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| (n.ends_with(".yaml") || n.ends_with(".yml")) && n != "kustomization.yaml")
        .collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|f| {
            let rel = format!("deploy/k8s/{f}");
            yaml_docs(&rel).into_iter().map(move |d| (f.clone(), d))
        })
        .collect()
}

/// The one object of `kind`.
fn object(kind: &str) -> Value {
    let found: Vec<Value> =
        k8s_objects().into_iter().map(|(_, o)| o).filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} under deploy/k8s");
    found.into_iter().next().expect("checked above")
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no string at {pointer}"))
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("no integer at {pointer}"))
}

/// The pod spec of a Deployment or CronJob.
fn pod_spec(workload: &Value) -> &Value {
    let pointer = match workload["kind"].as_str() {
        Some("Deployment") => "/spec/template/spec",
        Some("CronJob") => "/spec/jobTemplate/spec/template/spec",
        other => panic!("not a workload: {other:?}"),
    };
    workload.pointer(pointer).expect("a pod template")
}

/// The workload's one container (xaas is a single-container pod).
fn container(workload: &Value) -> &Value {
    let containers = pod_spec(workload)["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container per xaas pod");
    &containers[0]
}

fn args(container: &Value) -> Vec<&str> {
    container["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("str")).collect()
}

/// The ConfigMap's files: `xaas.yaml` and the mapping it names.
fn configmap_files() -> BTreeMap<String, String> {
    let cm = object("ConfigMap");
    cm["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string data").to_owned()))
        .collect()
}

fn configmap_config() -> Value {
    serde_saphyr::from_str(&configmap_files()["xaas.yaml"]).expect("the embedded config is YAML")
}

/// `docker build ... -t NAME:TAG .` from the Dockerfile's header comment.
fn dockerfile_published_image() -> (String, String) {
    let dockerfile = read("deploy/Dockerfile");
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with('#') && l.contains("docker build"))
        .expect("the Dockerfile documents its docker build command");
    let mut words = line.split_whitespace();
    words.find(|w| *w == "-t").expect("a -t NAME:TAG");
    let tagged = words.next().expect("an image after -t");
    let (name, tag) = tagged.rsplit_once(':').expect("NAME:TAG");
    (name.to_owned(), tag.to_owned())
}

// ---------------------------------------------------------------------------------------
// Kubernetes objects

#[test]
fn every_manifest_is_a_known_kind_at_its_api_version_and_labelled() {
    let expected: BTreeMap<&str, &str> = [
        ("CronJob", "batch/v1"),
        ("Deployment", "apps/v1"),
        ("Service", "v1"),
        ("ConfigMap", "v1"),
        ("Secret", "v1"),
        ("ServiceAccount", "v1"),
    ]
    .into();
    let mut seen = BTreeSet::new();
    for (file, o) in k8s_objects() {
        let kind = o["kind"].as_str().unwrap_or_else(|| panic!("{file}: no kind"));
        let api = expected.get(kind).unwrap_or_else(|| panic!("{file}: unexpected kind {kind}"));
        assert_eq!(o["apiVersion"], *api, "{file}: {kind} is {api}");
        assert!(o.pointer("/metadata/name").and_then(Value::as_str).is_some(), "{file}: name");
        assert!(
            o.pointer("/metadata/namespace").is_none(),
            "{file}: namespace is left to kubectl/kustomize"
        );
        assert_eq!(o.pointer("/metadata/labels/app.kubernetes.io~1name"), Some(&"xaas".into()));
        assert!(seen.insert(kind.to_owned()), "{file}: a second {kind}");
    }
    assert_eq!(seen, expected.keys().map(|k| k.to_string()).collect());
}

#[test]
fn kustomization_lists_every_manifest_but_the_placeholder_secret() {
    let k = yaml_one("deploy/k8s/kustomization.yaml");
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k["kind"], "Kustomization");
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name").to_owned())
        .collect();
    // Every manifest but the Secret: its placeholders must never overwrite the real one.
    let files: BTreeSet<String> =
        k8s_objects().into_iter().map(|(f, _)| f).filter(|f| f != "secret.yaml").collect();
    assert_eq!(listed, files);
}

#[test]
fn the_service_selects_the_daemon_pods_and_targets_its_http_port() {
    let deployment = object("Deployment");
    let service = object("Service");
    let pod_labels = deployment.pointer("/spec/template/metadata/labels").expect("pod labels");
    let match_labels = deployment.pointer("/spec/selector/matchLabels").expect("matchLabels");
    let selector = &service["spec"]["selector"];
    for (k, v) in match_labels.as_object().expect("map") {
        assert_eq!(&pod_labels[k], v, "the Deployment's selector matches its pods on {k}");
    }
    for (k, v) in selector.as_object().expect("the Service has a selector") {
        assert_eq!(&pod_labels[k], v, "the Service selects the daemon's pods on {k}");
    }
    // The Service must not also select the CronJob's pods.
    let cron_labels = object("CronJob");
    let cron_labels =
        cron_labels.pointer("/spec/jobTemplate/spec/template/metadata/labels").expect("labels");
    assert!(selector.as_object().unwrap().iter().any(|(k, v)| &cron_labels[k] != v));

    let ports = container(&deployment)["ports"].as_array().expect("ports").clone();
    let http = ports.iter().find(|p| p["name"] == "http").expect("a port named http");
    assert_eq!(u64_at(http, "/containerPort"), HTTP_PORT);
    let sport = &service["spec"]["ports"].as_array().expect("service ports")[0];
    assert_eq!(sport["name"], "http");
    let target = &sport["targetPort"];
    assert!(target == "http" || target.as_u64() == Some(HTTP_PORT), "targetPort {target}");

    // The config listens where the container port says.
    let config = configmap_config();
    let listen = str_at(&config, "/serve/listen");
    assert!(listen.ends_with(&format!(":{HTTP_PORT}")), "serve.listen {listen}");
    assert!(listen.starts_with("0.0.0.0:"), "serve.listen must not be loopback in a pod");
}

#[test]
fn the_daemon_is_probed_on_healthz_and_readyz() {
    let deployment = object("Deployment");
    let c = container(&deployment);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert!(get["port"] == "http" || get["port"].as_u64() == Some(HTTP_PORT), "{probe} port");
    }
}

#[test]
fn workloads_are_hardened_resourced_and_write_only_to_volumes() {
    for kind in ["Deployment", "CronJob"] {
        let w = object(kind);
        let pod = pod_spec(&w);
        let c = container(&w);
        assert_eq!(pod["serviceAccountName"], "xaas", "{kind}: the IRSA service account");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{kind}");
        let uid = u64_at(pod, "/securityContext/runAsUser");
        assert_eq!(uid, 65532, "{kind}: the image's nonroot user");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{kind}");

        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{kind}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{kind}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{kind}");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{kind}");
        assert!(sc["capabilities"].get("add").is_none(), "{kind}: no capability added");
        assert!(sc.get("privileged").is_none_or(|p| p == false), "{kind}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{kind}");

        for section in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    c["resources"][section][resource].is_string(),
                    "{kind}: resources.{section}.{resource}"
                );
            }
        }

        // With a read-only root filesystem, temp files (the pull's spill) go to an emptyDir.
        let env = &c["env"];
        let tmpdir = env
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == "TMPDIR")
            .unwrap_or_else(|| panic!("{kind}: TMPDIR is set"));
        let tmpdir = str_at(tmpdir, "/value");
        let volume_of = |path: &str| -> Value {
            let mount = c["volumeMounts"]
                .as_array()
                .expect("volumeMounts")
                .iter()
                .find(|m| m["mountPath"] == path)
                .unwrap_or_else(|| panic!("{kind}: nothing mounted at {path}"))
                .clone();
            pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap_or_else(|| panic!("{kind}: no volume {}", mount["name"]))
                .clone()
        };
        assert!(volume_of(tmpdir).get("emptyDir").is_some(), "{kind}: TMPDIR is an emptyDir");
        assert!(volume_of("/var/lib/xaas").get("emptyDir").is_some(), "{kind}: the state dir");
        let config = volume_of("/etc/xaas/config");
        assert_eq!(config["configMap"]["name"], "xaas-config", "{kind}: the config is mounted");
        let config_mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == "/etc/xaas/config")
            .unwrap();
        assert!(config_mount.get("subPath").is_none(), "{kind}: subPath mounts never update");
    }
}

#[test]
fn the_cronjob_runs_once_and_never_overlaps_and_the_deployment_serves() {
    let cron = object("CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    assert!(cron["spec"]["schedule"].is_string());
    let job = &cron["spec"]["jobTemplate"]["spec"];
    assert!(job["backoffLimit"].as_u64().is_some(), "backoffLimit");
    assert_eq!(pod_spec(&cron)["restartPolicy"], "Never");
    assert_eq!(args(container(&cron))[..3], ["run", "--config", "/etc/xaas/config/xaas.yaml"]);

    let deployment = object("Deployment");
    assert_eq!(
        args(container(&deployment))[..3],
        ["serve", "--config", "/etc/xaas/config/xaas.yaml"]
    );
}

#[test]
fn the_grace_period_outlasts_the_shutdown_deadline() {
    let deadline = u64_at(&configmap_config(), "/serve/shutdown_deadline_secs");
    let grace = u64_at(pod_spec(&object("Deployment")), "/terminationGracePeriodSeconds");
    assert!(
        grace > deadline,
        "terminationGracePeriodSeconds {grace} <= shutdown deadline {deadline}"
    );

    let compose = yaml_one("deploy/compose.yaml");
    let compose_config = yaml_one("deploy/compose/xaas.yaml");
    let deadline = u64_at(&compose_config, "/serve/shutdown_deadline_secs");
    let grace = str_at(&compose, "/services/xaas/stop_grace_period");
    let grace: u64 = grace.strip_suffix('s').and_then(|s| s.parse().ok()).expect("Ns");
    assert!(grace > deadline, "compose stop_grace_period {grace}s <= {deadline}s");
}

#[test]
fn every_image_is_the_published_one() {
    let (name, tag) = dockerfile_published_image();
    assert_eq!(name, IMAGE);
    assert_eq!(tag, env!("CARGO_PKG_VERSION"), "the image tag is the crate's version");
    let image = format!("{name}:{tag}");
    for kind in ["Deployment", "CronJob"] {
        assert_eq!(container(&object(kind))["image"], image.as_str(), "{kind}");
    }
    let compose = yaml_one("deploy/compose.yaml");
    for service in ["okta", "xaas"] {
        assert_eq!(compose["services"][service]["image"], image.as_str(), "compose {service}");
    }
    assert!(read("deploy/README.md").contains(&format!("-t {image}")), "the guide's build command");
}

#[test]
fn the_secret_is_placeholders_only_and_feeds_every_env_var_the_workloads_read() {
    let secret = object("Secret");
    let data = secret["stringData"].as_object().expect("stringData, readable placeholders");
    assert!(secret.get("data").is_none(), "no base64 data: it would hide real values");
    for (k, v) in data {
        assert!(v.as_str().expect("string").contains("REPLACE"), "{k} is an obvious placeholder");
    }
    for kind in ["Deployment", "CronJob"] {
        for e in container(&object(kind))["env"].as_array().expect("env") {
            if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                assert_eq!(r["name"], secret["metadata"]["name"], "{kind}: {}", e["name"]);
                let key = str_at(r, "/key");
                assert!(data.contains_key(key), "{kind}: {} needs key {key}", e["name"]);
            }
        }
    }
}

/// The IAM actions each DynamoDB SDK call needs (a transaction needs its items' actions).
const SDK_CALLS: &[(&str, &[&str])] = &[
    ("batch_get_item", &["BatchGetItem"]),
    ("batch_write_item", &["BatchWriteItem"]),
    ("condition_check", &["ConditionCheckItem"]),
    ("create_table", &["CreateTable"]),
    ("delete_item", &["DeleteItem"]),
    ("describe_table", &["DescribeTable"]),
    ("describe_time_to_live", &["DescribeTimeToLive"]),
    ("get_item", &["GetItem"]),
    ("put_item", &["PutItem"]),
    ("query", &["Query"]),
    ("scan", &["Scan"]),
    ("transact_get_items", &["GetItem"]),
    ("transact_write_items", &["PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem"]),
    ("update_item", &["UpdateItem"]),
    ("update_time_to_live", &["UpdateTimeToLive"]),
];

/// The IAM actions of the DynamoDB calls a source file makes (`.scan()`, `.put_item()`...),
/// or `None` when the file does not exist.
fn dynamodb_actions_called(rel: &str) -> Option<BTreeSet<String>> {
    // A file, or a module directory (every `.rs` file in it).
    let path = repo().join(rel);
    let text = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(&path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
        files.sort();
        files.iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect::<String>()
    } else {
        std::fs::read_to_string(&path).ok()?
    };
    let actions: BTreeSet<String> = SDK_CALLS
        .iter()
        .filter(|(call, _)| text.contains(&format!(".{call}()")))
        .flat_map(|(_, actions)| actions.iter().map(|a| format!("dynamodb:{a}")))
        .collect();
    Some(actions)
}

#[test]
fn the_service_account_carries_the_irsa_role_and_the_policy_is_exactly_what_xaas_calls() {
    let sa = object("ServiceAccount");
    let role = str_at(&sa, "/metadata/annotations/eks.amazonaws.com~1role-arn");
    assert!(role.starts_with("arn:aws:iam::") && role.contains(":role/"), "{role}");

    let policy: Value = serde_json::from_str(&read("deploy/k8s/iam-policy.json")).expect("JSON");
    assert_eq!(policy["Version"], "2012-10-17");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().expect("a list").iter().map(|a| a.as_str().unwrap().to_owned()).collect()
    };
    let config = configmap_config();
    let source_table = str_at(&config, "/jobs/0/source/table");
    let prefix = str_at(&config, "/state/table_prefix");

    // Least privilege both ways: every call xaas makes is allowed (or it fails with
    // AccessDenied in production), and nothing else is.
    let source_actions =
        dynamodb_actions_called("src/sources/dynamodb.rs").expect("the DynamoDB source exists");
    let state_actions = dynamodb_actions_called("src/state/dynamodb")
        .expect("the DynamoDB state backend exists (src/state/dynamodb/)");

    let mut kinds = Vec::new();
    for s in policy["Statement"].as_array().expect("statements") {
        assert_eq!(s["Effect"], "Allow");
        let resources = strings(&s["Resource"]);
        let actions: BTreeSet<String> = strings(&s["Action"]).into_iter().collect();
        assert!(actions.iter().all(|a| !a.contains('*')), "no wildcard action: {actions:?}");
        let on_tables = |r: &String| r.starts_with("arn:aws:dynamodb:") && r.contains(":table/");
        assert!(resources.iter().all(on_tables), "only DynamoDB tables: {resources:?}");
        if resources.iter().all(|r| r.contains(&format!(":table/{source_table}"))) {
            assert_eq!(actions, source_actions, "the source table: read only what it reads");
            kinds.push("source");
        } else if resources.iter().all(|r| r.contains(&format!(":table/{prefix}"))) {
            assert_eq!(actions, state_actions, "the state tables");
            kinds.push("state");
        } else {
            panic!("a statement on neither the source nor the state tables: {resources:?}");
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["source", "state"]);
}

// ---------------------------------------------------------------------------------------
// The configs, loaded by xaas itself

/// Write `files` into a fresh directory and run `xaas validate` on `config` there, with only
/// `env` in the environment (so nothing of the machine's XAAS_* leaks in). Validation is
/// `settings::load`: the config, every mapping it names, and the secrets it reads at load.
fn validate(dir: &Path, config: &str, env: &BTreeMap<String, String>) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xaas"))
        .args(["validate", "--config"])
        .arg(dir.join(config))
        .env_clear()
        .envs(env)
        .output()
        .expect("run xaas validate");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Validate a config whose `state.backend` may be `dynamodb` before this build knows it.
///
/// The DynamoDB state backend is built in parallel with these manifests. Until it is in the
/// binary, the only error allowed is that `state.backend: dynamodb` is unknown; the rest of
/// the config is then validated with the embedded SQLite backend in its place. Once the
/// backend exists the config must load as written, key for key.
fn assert_loads(dir: &Path, config: &str, env: &BTreeMap<String, String>) {
    let (ok, stderr) = validate(dir, config, env);
    if ok {
        return;
    }
    // Each problem's first line starts with the file's path.
    let file = dir.join(config).display().to_string();
    let problems: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&file)).collect();
    let only_backend_unknown = !problems.is_empty()
        && problems.iter().all(|p| p.contains(": state."))
        && problems.iter().any(|p| p.contains("state.backend") && p.contains("dynamodb"));
    assert!(only_backend_unknown, "{config} does not load:\n{stderr}");
    eprintln!(
        "note: this build has no `state.backend: dynamodb` yet; {config} is checked with the \
         sqlite backend in its place"
    );
    let path = dir.join(config);
    let mut value: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).expect("YAML");
    assert_eq!(value["state"]["backend"], "dynamodb");
    value["state"] = serde_json::json!({"backend": "sqlite", "path": "state.db"});
    let fallback = format!("sqlite-{config}");
    std::fs::write(dir.join(&fallback), serde_saphyr::to_string(&value).expect("YAML")).unwrap();
    let (ok, stderr) = validate(dir, &fallback, env);
    assert!(ok, "{config} does not load (state backend aside):\n{stderr}");
}

/// The environment a workload gives its container: every variable, with a dummy value for
/// those taken from the Secret.
fn workload_env(kind: &str) -> BTreeMap<String, String> {
    container(&object(kind))["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let name = str_at(e, "/name").to_owned();
            let value = e.get("value").and_then(Value::as_str).unwrap_or("dummy-secret-value");
            (name, value.to_owned())
        })
        .collect()
}

#[test]
fn the_configmap_config_loads_in_xaas_with_the_workloads_environment() {
    let dir = tempfile::tempdir().unwrap();
    let files = configmap_files();
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let config = configmap_config();
    // The mapping the job names is shipped next to the config.
    for job in config["jobs"].as_array().expect("jobs") {
        let mapping = str_at(job, "/mapping");
        assert!(files.contains_key(mapping), "the ConfigMap holds {mapping}");
    }
    // Both workloads run with exactly their own environment (the CronJob needs the webhook
    // secret too: loading the config reads it).
    for kind in ["Deployment", "CronJob"] {
        assert_loads(dir.path(), "xaas.yaml", &workload_env(kind));
    }
    // And the shipped mapping passes its own tests.
    let mappings: Vec<&String> = files.keys().filter(|k| *k != "xaas.yaml").collect();
    let out = Command::new(env!("CARGO_BIN_EXE_xaas"))
        .args(["mapping", "test"])
        .args(mappings.iter().map(|m| dir.path().join(m)))
        .env_clear()
        .output()
        .expect("run xaas mapping test");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_compose_config_loads_in_xaas_with_the_compose_environment() {
    let compose = yaml_one("deploy/compose.yaml");
    let xaas = &compose["services"]["xaas"];
    // The config is mounted at /etc/xaas/xaas.yaml, next to the image's mappings/.
    let volumes: Vec<&str> =
        xaas["volumes"].as_array().expect("volumes").iter().map(|v| v.as_str().unwrap()).collect();
    assert!(volumes.contains(&"./compose/xaas.yaml:/etc/xaas/xaas.yaml:ro"), "{volumes:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("xaas.yaml"), read("deploy/compose/xaas.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("mappings")).unwrap();
    for entry in std::fs::read_dir(repo().join("mappings")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join("mappings").join(entry.file_name())).unwrap();
    }
    let env: BTreeMap<String, String> = xaas["environment"]
        .as_object()
        .expect("environment as a map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string values").to_owned()))
        .collect();
    assert_loads(dir.path(), "xaas.yaml", &env);
}

// ---------------------------------------------------------------------------------------
// The compose stack and the Dockerfile

#[test]
fn the_compose_stack_wires_xaas_to_dynalite_and_the_emulator() {
    let compose = yaml_one("deploy/compose.yaml");
    let config = yaml_one("deploy/compose/xaas.yaml");
    let s = &compose["services"];
    let command = |svc: &str| -> Vec<String> {
        s[svc]["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().into()).collect()
    };
    assert_eq!(command("xaas")[..3], ["serve", "--config", "/etc/xaas/xaas.yaml"]);
    assert_eq!(command("okta")[0], "sim");
    assert_eq!(s["xaas"]["read_only"], true);
    assert_eq!(s["okta"]["read_only"], true);
    let volumes: Vec<&str> =
        s["xaas"]["volumes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(volumes.iter().any(|v| v.ends_with(":/var/lib/xaas")), "the state volume");

    // One network namespace: xaas reaches the emulator and dynalite on loopback.
    assert_eq!(s["xaas"]["network_mode"], "service:okta");
    assert_eq!(s["dynalite"]["network_mode"], "service:okta");
    let sim = command("okta");
    let listen = &sim[sim.iter().position(|a| a == "--listen").unwrap() + 1];
    let sim_port = listen.rsplit_once(':').unwrap().1;
    assert_eq!(str_at(&config, "/okta/org_url"), format!("http://127.0.0.1:{sim_port}"));
    let ports: Vec<&str> =
        s["okta"]["ports"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(ports.contains(&format!("{HTTP_PORT}:{HTTP_PORT}").as_str()), "{ports:?}");

    // dynalite: the version tests/run uses, on the port the state endpoint names.
    let dynalite = command("dynalite").join(" ");
    let version = read("tests/run")
        .lines()
        .find_map(|l| l.strip_prefix("DYNALITE_VERSION=").map(str::to_owned))
        .expect("tests/run pins dynalite");
    assert!(dynalite.contains(&format!("dynalite@{version}")), "{dynalite}");
    let port = dynalite.split("--port ").nth(1).unwrap().split_whitespace().next().unwrap();
    assert_eq!(str_at(&config, "/state/backend"), "dynamodb");
    assert_eq!(str_at(&config, "/state/endpoint_url"), format!("http://127.0.0.1:{port}"));
}

#[test]
fn the_dockerfile_builds_with_the_ci_command_and_runs_hardened() {
    let dockerfile = read("deploy/Dockerfile");
    // Instructions with their continuation lines joined, comments dropped.
    let mut instructions: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let with = |op: &str| -> Vec<&String> {
        instructions.iter().filter(|i| i.split_whitespace().next() == Some(op)).collect()
    };
    let froms = with("FROM");
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let runtime = froms.last().unwrap();
    assert!(
        runtime.contains("gcr.io/distroless/") || runtime.contains("debian:bookworm-slim"),
        "a minimal runtime: {runtime}"
    );
    // Everything after the last FROM is the runtime stage.
    let last_from = instructions.iter().rposition(|i| i.starts_with("FROM")).unwrap();
    let runtime_stage = &instructions[last_from..];
    let user = runtime_stage.iter().rev().find(|i| i.starts_with("USER")).expect("a USER");
    let uid = user.split_whitespace().nth(1).unwrap().split(':').next().unwrap();
    assert!(!matches!(uid, "0" | "root"), "non-root: {user}");
    assert!(uid == "65532" || uid == "10001" || uid == "nonroot", "{user}");
    let runs = |needle: &str| runtime_stage.iter().any(|i| i.contains(needle));
    assert!(runs(r#"HEALTHCHECK"#) && runs(r#"CMD ["/usr/local/bin/xaas", "healthcheck"]"#));
    assert!(runs(r#"ENTRYPOINT ["/usr/local/bin/xaas"]"#));
    assert!(runs(r#"CMD ["serve", "--config", "/etc/xaas/xaas.yaml"]"#));
    assert!(runs(&format!("EXPOSE {HTTP_PORT}")));
    assert!(runs("COPY mappings/ /etc/xaas/mappings/"), "the example mappings ship");
    assert!(runs("ENV TMPDIR=/var/lib/xaas"), "temp files go to the writable volume");
    assert!(runs(r#"VOLUME ["/var/lib/xaas"]"#));
    assert!(runs("org.opencontainers.image.title"), "OCI labels");

    // The builder runs deploy/build.sh, and only it; the script is the documented command.
    let build_stage = &instructions[..last_from];
    let build_runs: Vec<&String> =
        build_stage.iter().filter(|i| i.starts_with("RUN") && i.contains("cargo build")).collect();
    assert!(build_runs.is_empty(), "cargo is run only through deploy/build.sh: {build_runs:?}");
    assert!(build_stage.iter().any(|i| i.starts_with("RUN") && i.contains("deploy/build.sh")));
    let script = read("deploy/build.sh");
    let commands: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("cargo "))
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(commands, [format!("exec {BUILD_COMMAND}")], "deploy/build.sh");
    assert!(read("deploy/README.md").contains(BUILD_COMMAND), "the guide documents it");
}

/// The alerting rules shipped in deploy/prometheus: well formed, each documented, and every
/// metric they read is one xaas exports (a renamed metric would silence an alert for good).
#[test]
fn the_alert_rules_use_only_metrics_xaas_exports_and_each_is_documented() {
    let text = read("deploy/prometheus/xaas-alerts.yaml");
    let rules: Value = serde_saphyr::from_str(&text).expect("the rules file is YAML");
    let rules = rules["groups"][0]["rules"].as_array().expect("one group of rules");
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().expect("alert")).collect();
    for wanted in [
        "XaasJobFailing",
        "XaasNoSuccessfulRun",
        "XaasRunHeld",
        "XaasWebhookBacklogGrowing",
        "XaasConfigReloadFailed",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing: {names:?}");
    }
    let guide = read("deploy/README.md");
    let metric = regex::Regex::new(r"\bxaas_[a-z_]+").unwrap();
    for r in rules {
        let name = r["alert"].as_str().unwrap();
        assert!(guide.contains(name), "{name} is not documented in deploy/README.md");
        assert!(r["labels"]["severity"].is_string(), "{name}: a severity");
        assert!(r["annotations"]["summary"].is_string(), "{name}: a summary");
        let expr = r["expr"].as_str().unwrap_or_else(|| panic!("{name}: an expr"));
        let used: Vec<&str> = metric.find_iter(expr).map(|m| m.as_str()).collect();
        assert!(!used.is_empty(), "{name} reads no xaas metric: {expr}");
        for m in used {
            let base =
                ["_bucket", "_count", "_sum"].iter().find_map(|s| m.strip_suffix(s)).unwrap_or(m);
            assert!(
                xaas::telemetry::ALL.contains(&base),
                "{name} reads `{m}`, which xaas does not export"
            );
        }
    }
}
