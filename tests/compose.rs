//! docker-compose.yml and the Dockerfile: the compose file parses, names only services, secrets
//! and volumes it declares, and every command it runs (and the streaming workflow the image
//! ships) is a `pvabridge` command whose options exist, checked against `--help` of this build.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

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
                let volume = mount.split(':').next().unwrap().to_string();
                assert!(
                    volumes.contains(&volume),
                    "{name}: undeclared volume {volume}"
                );
            }
        }
        if let Some(Value::Mapping(after)) = service.get("depends_on") {
            for other in after.keys() {
                assert!(names.contains(other.as_str().unwrap()), "{name}: {other:?}");
            }
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
