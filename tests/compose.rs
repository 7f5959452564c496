//! docker-compose.yml and the Dockerfile: the compose file parses, names only services, secrets
//! and volumes it declares, and every command it runs (and the streaming workflow the image
//! ships) is a `pvabridge` command whose options exist, checked against `--help` of this build;
//! its services start as compose starts them (in their order, after the conditions they depend
//! on) in a network namespace of the test's own, with default ports, and their health commands
//! succeed there; the Dockerfile's dependency layer builds from the manifests alone.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use std::process::Command;
use std::time::Duration;

use common::cli_help::check_command;
use serde_yaml_ng::Value;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn strings(value: &Value, context: &str) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{context} is not a list"))
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => panic!("{context}: {other:?} is not a string (quote it)"),
        })
        .collect()
}

#[test]
fn every_command_of_the_compose_file_exists_with_its_options() {
    let text = std::fs::read_to_string(repo("docker-compose.yml")).unwrap();
    let mut compose: Value = serde_yaml_ng::from_str(&text).expect("docker-compose.yml parses");
    compose.apply_merge().expect("the merge keys apply");
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for wanted in ["bridge", "dm-service", "simdet"] {
        assert!(names.contains(wanted), "no {wanted} service: {names:?}");
    }
    let declared = |section: &str| -> BTreeSet<String> {
        compose[section]
            .as_mapping()
            .map(|m| {
                m.keys()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (secrets, volumes) = (declared("secrets"), declared("volumes"));
    let mut commands = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        assert_eq!(
            service["build"],
            Value::from("."),
            "{name} is built from ./Dockerfile"
        );
        let command = strings(&service["command"], &format!("services.{name}.command"));
        check_command(&command, &format!("service {name}"));
        commands += 1;
        if let Some(test) = service.get("healthcheck").map(|h| &h["test"]) {
            let test = strings(test, &format!("services.{name}.healthcheck.test"));
            assert_eq!(&test[..2], ["CMD", "pvabridge"], "{name}: {test:?}");
            check_command(&test[2..], &format!("service {name} healthcheck"));
            commands += 1;
        }
        if let Some(used) = service.get("secrets") {
            for secret in strings(used, name) {
                assert!(
                    secrets.contains(&secret),
                    "{name}: undeclared secret {secret}"
                );
            }
        }
        if let Some(mounts) = service.get("volumes") {
            for mount in strings(mounts, name) {
                let (source, _) = mount_paths(&mount);
                let bind = source.starts_with('.') || source.starts_with('/');
                assert!(
                    bind || volumes.contains(&source),
                    "{name}: undeclared volume {source}"
                );
            }
        }
        if let Some(Value::Mapping(after)) = service.get("depends_on") {
            for (other, how) in after {
                assert!(names.contains(other.as_str().unwrap()), "{name}: {other:?}");
                let condition = how["condition"].as_str().unwrap_or("service_started");
                assert!(
                    [
                        "service_started",
                        "service_healthy",
                        "service_completed_successfully"
                    ]
                    .contains(&condition),
                    "{name}: condition {condition}"
                );
                if condition == "service_healthy" {
                    assert!(
                        services[other].get("healthcheck").is_some(),
                        "{name} waits for {other:?} to be healthy, which has no healthcheck"
                    );
                }
            }
        }
        if service["restart"].as_str() != Some("no") {
            assert!(
                service.get("healthcheck").is_some(),
                "{name} runs on and has no healthcheck"
            );
        }
        if command[0] == "dm-service" || command.iter().any(|a| a == "--embedded-dm") {
            assert_eq!(
                service["init"],
                Value::Bool(true),
                "{name} spawns stage processes: it needs an init"
            );
        }
    }
    assert!(commands >= 4, "{commands} commands checked");
}

#[test]
fn the_image_has_what_the_compose_file_and_the_workflow_use() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    assert!(dockerfile.contains(r#"ENTRYPOINT ["pvabridge"]"#));
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY examples/"))
    {
        let source = line.split_whitespace().nth(1).unwrap();
        assert!(repo(source).is_file(), "Dockerfile copies missing {source}");
    }
    let compose = std::fs::read_to_string(repo("docker-compose.yml")).unwrap();
    assert!(compose.contains("/etc/pvabridge/stream-stats.workflow.json"));
    assert!(dockerfile.contains("/etc/pvabridge/stream-stats.workflow.json"));

    let workflow: dm::Workflow = serde_json::from_str(
        &std::fs::read_to_string(repo("examples/bluesky/stream-stats.workflow.json")).unwrap(),
    )
    .expect("the workflow file is a DM workflow");
    let mut checked = 0;
    for (key, stage) in &workflow.stages {
        if let Some(rest) = stage.command.strip_prefix("pvabridge ") {
            let args: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            check_command(&args, &format!("workflow stage {key}"));
            checked += 1;
        }
    }
    assert_eq!(
        checked, 1,
        "the streaming stage runs pvabridge workflow consume"
    );
}

/// `${NAME:-default}` and `${NAME}` as compose expands them when NAME is not set (the test gives
/// no .env): the default, or nothing.
fn expand(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed ${") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The source and target of a `SOURCE:TARGET[:MODE]` mount, variables expanded.
fn mount_paths(mount: &str) -> (String, String) {
    let expanded = expand(mount);
    let mut parts = expanded.split(':');
    let source = parts.next().unwrap().to_string();
    let target = parts.next().expect("SOURCE:TARGET").to_string();
    (source, target)
}

/// Where the container's paths are on this machine: the secrets, the bind mounts (below the
/// project directory `project`), the files the Dockerfile copies into the image, and its
/// working directory.
fn container_paths(compose: &Value, project: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut paths = Vec::new();
    for (name, secret) in compose["secrets"].as_mapping().unwrap() {
        let file = secret["file"].as_str().expect("a file secret");
        paths.push((
            format!("/run/secrets/{}", name.as_str().unwrap()),
            project.join(file),
        ));
    }
    for service in compose["services"].as_mapping().unwrap().values() {
        if let Some(mounts) = service.get("volumes") {
            for mount in strings(mounts, "volumes") {
                let (source, target) = mount_paths(&mount);
                let host = project.join(source);
                std::fs::create_dir_all(&host).unwrap();
                paths.push((target, host));
            }
        }
    }
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let final_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    for line in final_stage
        .lines()
        .filter(|l| l.starts_with("COPY examples/"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        paths.push((words[2].to_string(), repo(words[1])));
    }
    let workdir = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("WORKDIR "))
        .expect("the image's WORKDIR");
    let home = project.join("home");
    std::fs::create_dir_all(&home).unwrap();
    paths.push((workdir.to_string(), home));
    // Longest first, so that a mount below the working directory wins over it.
    paths.sort_by_key(|(container, _)| std::cmp::Reverse(container.len()));
    paths
}

/// `text` with a container path at its start replaced by where it is here.
fn here(text: &str, paths: &[(String, std::path::PathBuf)]) -> String {
    for (container, host) in paths {
        if let Some(rest) = text.strip_prefix(container.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("{}{rest}", host.display());
            }
        }
    }
    text.to_string()
}

/// A compose service run as compose would run it, with the container's paths mapped here.
struct Service {
    name: String,
    command: Vec<String>,
    health: Option<Vec<String>>,
    env: Vec<(String, String)>,
    log: std::path::PathBuf,
}

impl Service {
    fn read(name: &str, spec: &Value, paths: &[(String, std::path::PathBuf)], logs: &Path) -> Self {
        let mapped = |words: Vec<String>| words.iter().map(|w| here(w, paths)).collect();
        let env = spec
            .get("environment")
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| format!("{v:?}"), str::to_string);
                        (k.as_str().unwrap().to_string(), here(&v, paths))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Service {
            name: name.to_string(),
            command: mapped(strings(&spec["command"], name)),
            health: spec
                .get("healthcheck")
                .map(|h| mapped(strings(&h["test"], name)[2..].to_vec())),
            env,
            log: logs.join(format!("{name}.log")),
        }
    }

    /// `pvabridge ARGS` in the namespace with this service's environment only (as in its
    /// container: no EPICS variables, default ports).
    fn pvabridge(&self, ns: &common::netns::Netns, args: &[String]) -> std::process::Command {
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_pvabridge"));
        // In the image, pvabridge is in /usr/local/bin: here, its build directory stands there
        // (the DM service's stages run `pvabridge workflow consume`).
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_pvabridge")).parent().unwrap();
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn start(&self, ns: &common::netns::Netns) -> common::Running {
        let mut cmd = self.pvabridge(ns, &self.command);
        cmd.stdout(std::fs::File::create(&self.log).unwrap())
            .stderr(std::fs::File::create(&self.log).unwrap());
        common::Running(cmd.spawn().expect("start a service"))
    }

    /// Run the health command once: whether it succeeded, and what it said.
    fn healthy(&self, ns: &common::netns::Netns) -> (bool, String) {
        let health = self.health.as_ref().expect("a healthcheck");
        let out = ns.run(self.pvabridge(ns, health), Duration::from_secs(15));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Wait (at most `limit`) until the health command succeeds, as compose's retries do.
    fn wait_healthy(&self, ns: &common::netns::Netns, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let (ok, said) = self.healthy(ns);
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never became healthy: {said}\nits log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[test]
fn the_services_start_as_compose_starts_them_and_their_health_commands_succeed() {
    let text = std::fs::read_to_string(repo("docker-compose.yml")).unwrap();
    let mut compose: Value = serde_yaml_ng::from_str(&text).unwrap();
    compose.apply_merge().unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("dm-login"), "pvabridge|compose-test\n").unwrap();
    let paths = container_paths(&compose, project.path());
    let specs = compose["services"].as_mapping().unwrap();
    let services: Vec<Service> = specs
        .iter()
        .map(|(name, spec)| Service::read(name.as_str().unwrap(), spec, &paths, project.path()))
        .collect();
    let by_name = |name: &str| services.iter().find(|s| s.name == name).unwrap();

    let ns = common::netns::Netns::new().with_broadcast();
    let mut running = Vec::new();
    let mut started: Vec<String> = Vec::new();
    // Compose's order: a service starts once every service it depends on meets its condition.
    while started.len() < services.len() {
        let ready = services.iter().find(|s| {
            !started.contains(&s.name)
                && specs[s.name.as_str()]
                    .get("depends_on")
                    .and_then(Value::as_mapping)
                    .is_none_or(|after| {
                        after
                            .keys()
                            .all(|other| started.iter().any(|s| s == other.as_str().unwrap()))
                    })
        });
        let service = ready.expect("the depends_on graph has no cycle");
        if let Some(after) = specs[service.name.as_str()]
            .get("depends_on")
            .and_then(Value::as_mapping)
        {
            // A one-shot service (restart: "no") ran to completion when it started, so
            // service_completed_successfully is met by then; service_healthy is waited for.
            for (other, how) in after {
                if how["condition"].as_str() == Some("service_healthy") {
                    by_name(other.as_str().unwrap()).wait_healthy(&ns, Duration::from_secs(30));
                }
            }
        }
        if specs[service.name.as_str()]["restart"].as_str() == Some("no") {
            let out = ns.run(
                service.pvabridge(&ns, &service.command),
                Duration::from_secs(30),
            );
            assert!(
                out.status.success(),
                "{} did not complete successfully: {}",
                service.name,
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            running.push(service.start(&ns));
        }
        started.push(service.name.clone());
    }
    for service in services.iter().filter(|s| s.health.is_some()) {
        service.wait_healthy(&ns, Duration::from_secs(30));
    }
    // The registration happened, and the DM service keeps its data in the bind mount.
    let (_, listed) = by_name("dm-service").healthy(&ns);
    assert!(listed.contains("name=stream-stats"), "{listed}");
    assert!(
        project
            .path()
            .join("pvabridge-data/dm/dm.sqlite3")
            .is_file(),
        "the DM service's data is in the directory the user names"
    );
    // A run through the deployment ends DONE, Bluesky's side on a thread inside its host.
    let outcome = run_through_the_deployment(&ns);
    assert_eq!(
        outcome,
        Ok((coordinator::State::Done, 10, 0)),
        "a run through the deployment:\n{}",
        services
            .iter()
            .map(|s| format!(
                "--- {}:\n{}",
                s.name,
                std::fs::read_to_string(&s.log).unwrap_or_default()
            ))
            .collect::<String>()
    );
    // A health command can fail: without its server, the bridge's does.
    drop(running);
    let (ok, said) = by_name("bridge").healthy(&ns);
    assert!(!ok, "healthy without a bridge: {said}");
}

/// Play Bluesky's side of one run of 10 frames against the deployment in `ns`, as the example
/// plan does with default EPICS configuration: START with the registered workflow, READY,
/// ACQ_STARTED, an acquisition of the ADSimDetector, ACQ_DONE; the final state and the frames the
/// bridge counted.
fn run_through_the_deployment(
    ns: &common::netns::Netns,
) -> Result<(coordinator::State, i64, i64), String> {
    use coordinator::{HandshakeClient, RunRequest};
    use pva::client::Context;

    const FRAMES: i32 = 10;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                ns.block_on(async {
                    let wait = Duration::from_secs(30);
                    let run = async {
                        let config =
                            pva::ClientConfig::from_lookup(&|_| None).map_err(|e| e.to_string())?;
                        let ctx = Context::new(config).map_err(|e| e.to_string())?;
                        let put = |pv: &'static str, field: &'static str, value: i32| {
                            let ctx = ctx.clone();
                            async move {
                                ctx.put(pv)
                                    .set(field, value)
                                    .timeout(Duration::from_secs(10))
                                    .exec()
                                    .await
                                    .map_err(|e| format!("put {pv}: {e}"))
                            }
                        };
                        put("bl:det:cam1:NumImages", "value", FRAMES).await?;
                        let slot = HandshakeClient::new(ctx.clone(), "bl:wf1:")
                            .with_timeout(Duration::from_secs(10));
                        let mut request = RunRequest::new("stream-stats");
                        request.expected_frames = Some(FRAMES as u64);
                        request.data_channel = Some("bl:det:Pva1:Image".into());
                        request.run_uid = Some("uid-compose".into());
                        common::handshake::try_start_acquiring(&slot, &request, wait).await?;
                        put("bl:det:cam1:Acquire", "value.index", 1).await?;
                        common::handshake::wait_for_value(
                            &ctx,
                            "bl:det:cam1:Acquire_RBV",
                            "value.index",
                            0,
                            wait,
                        )
                        .await?;
                        let (end, received, missed) =
                            common::handshake::try_finish(&slot, wait).await?;
                        Ok((end.map_err(|e| e.to_string())?, received, missed))
                    };
                    tokio::time::timeout(Duration::from_secs(90), run)
                        .await
                        .unwrap_or_else(|_| Err("the run did not end within 90 s".into()))
                })
            })
            .join()
            .expect("the Bluesky thread")
    })
}

#[test]
fn the_dockerfile_dependency_layer_builds_from_the_manifests_alone() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let build = dockerfile.split("\nFROM ").nth(1).expect("a build stage");
    let (deps, sources) = build
        .split_once("COPY . .")
        .expect("COPY . . after the dependencies");
    // Join continued lines, then replay the dependency layer's COPY and RUN lines in a
    // directory of its own, with `cargo build` checking only that the workspace resolves.
    let joined = deps.replace("\\\n", " ");
    let dir = tempfile::tempdir().unwrap();
    let mut copied = 0;
    for line in joined.lines() {
        if let Some(copy) = line.strip_prefix("COPY ") {
            let words: Vec<&str> = copy.split_whitespace().collect();
            let (sources, dest) = words.split_at(words.len() - 1);
            let dest = dir.path().join(dest[0]);
            std::fs::create_dir_all(&dest).unwrap();
            for source in sources {
                let name = Path::new(source).file_name().unwrap();
                std::fs::copy(repo(source), dest.join(name)).unwrap();
                copied += 1;
            }
        } else if let Some(script) = line.strip_prefix("RUN ") {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "cargo() {{ command cargo metadata --no-deps --offline --format-version 1 \
                     > metadata.json; }}\n{script}"
                ))
                .current_dir(dir.path())
                .env("CARGO_TARGET_DIR", dir.path().join("target"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "the dependency layer fails: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let workspace = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    let members = workspace
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("the workspace members");
    // The root manifest, Cargo.lock, and one manifest per crate under crates/.
    let manifests = members.matches("\"crates/").count() + 2;
    assert_eq!(
        copied, manifests,
        "every manifest and Cargo.lock, nothing else"
    );
    let metadata = std::fs::read_to_string(dir.path().join("metadata.json")).unwrap();
    assert!(metadata.contains("\"name\":\"pvabridge\""));
    assert!(
        !dir.path().join("src").exists(),
        "the dependency layer leaves no empty crate behind"
    );
    assert!(sources.contains("cargo build --release --locked --bin pvabridge"));
    assert!(build.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"));
    assert!(build.contains("CARGO_PROFILE_RELEASE_DEBUG=0"));
}
