//! Helm chart renderings for the tests (`tests/tests/helm_chart.rs`): helm itself, the
//! rendered objects, and a rendered container made runnable on this machine (its
//! mounted ConfigMaps and Secrets written to files, their mount paths mapped to them,
//! its environment resolved as Kubernetes would).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::cluster::binary;

/// The chart's folder.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/ferry")
}

/// The helm binary: `FERRY_HELM`, or the one `scripts/tools.sh` installs.
pub fn helm() -> PathBuf {
    let path = std::env::var_os("FERRY_HELM").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/helm"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "helm is missing at {}: install it with `bash scripts/tools.sh` (`make test` runs it), \
         or point FERRY_HELM at a helm v4 binary",
        path.display()
    );
    path
}

/// Runs helm in the chart's folder; returns stdout, or stdout and stderr on failure.
pub fn run_helm(args: &[&str]) -> Result<String, String> {
    let output = Command::new(helm())
        .args(args)
        .current_dir(chart_dir())
        .output()
        .expect("run helm");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `helm template ferry . -f FILE...`: the rendered manifests.
pub fn render(values_files: &[&Path]) -> Result<String, String> {
    let mut args = vec!["template", "ferry", ".", "--namespace", "migrations"];
    let paths: Vec<String> = values_files
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    for path in &paths {
        args.extend(["-f", path.as_str()]);
    }
    run_helm(&args)
}

/// The objects of a multi-document YAML stream.
pub fn objects(manifests: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(manifests)
        .map(|document| {
            <Value as serde::Deserialize>::deserialize(document).expect("rendered YAML parses")
        })
        .filter(|object| !object.is_null())
        .collect()
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let present: Vec<String> = objects
                .iter()
                .map(|object| format!("{} {}", object["kind"], object["metadata"]["name"]))
                .collect();
            panic!("no {kind} {name} in the rendering; it has {present:?}")
        })
}

pub fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|object| object["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    kinds.sort();
    kinds
}

pub fn ci_values(name: &str) -> PathBuf {
    let path = chart_dir().join("ci").join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

pub fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// What the test gives the pods in place of the cluster: Secrets' contents, the
/// downward API's fields.
pub struct PodWorld {
    pub secrets: HashMap<(String, String), String>,
    pub pod_name: String,
    pub pod_ip: String,
}

/// A container of the rendering made runnable here: its binary, args and environment,
/// with every mounted ConfigMap and Secret written under `root` and their mount paths
/// mapped to those files.
pub struct RenderedProcess {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub root: PathBuf,
}

pub fn materialise(
    objects: &[Value],
    deployment: &Value,
    world: &PodWorld,
    root: &Path,
) -> RenderedProcess {
    let pod = &deployment["spec"]["template"]["spec"];
    let container = container(deployment);
    let volumes: BTreeMap<String, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|volume| (volume["name"].as_str().expect("name").to_owned(), volume))
        .collect();
    let mounts: Vec<(String, &Value)> = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|mount| {
            let path = mount["mountPath"].as_str().expect("mountPath").to_owned();
            let volume = volumes
                .get(mount["name"].as_str().expect("name"))
                .unwrap_or_else(|| panic!("mount {mount} names no volume"));
            (path, *volume)
        })
        .collect();
    // Paths of mounted ConfigMaps and Secrets, longest first, mapped under root.
    let mut mapped: Vec<String> = mounts
        .iter()
        .filter(|(_, volume)| volume["emptyDir"].is_null())
        .map(|(path, _)| path.clone())
        .collect();
    mapped.sort_by_key(|path| std::cmp::Reverse(path.len()));
    let map_paths = |text: &str| -> String {
        let mut result = text.to_owned();
        for (index, path) in mapped.iter().enumerate() {
            result = result.replace(path.as_str(), &format!("\u{0}{index}\u{0}"));
        }
        for (index, path) in mapped.iter().enumerate() {
            let local = format!("{}{path}", root.display());
            result = result.replace(&format!("\u{0}{index}\u{0}"), &local);
        }
        result
    };
    for (mount_path, volume) in &mounts {
        let dir = root.join(mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).expect("mount dir");
        if let Some(name) = volume["configMap"]["name"].as_str() {
            let config_map = find(objects, "ConfigMap", name);
            for (key, text) in config_map["data"].as_object().expect("data") {
                let text = text.as_str().expect("text");
                std::fs::write(dir.join(key), map_paths(text)).expect("write config");
            }
        } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
            if let Some(items) = volume["secret"]["items"].as_array() {
                for item in items {
                    let key = item["key"].as_str().expect("key").to_owned();
                    let content = world
                        .secrets
                        .get(&(secret.to_owned(), key.clone()))
                        .unwrap_or_else(|| panic!("the pod mounts Secret {secret} key {key}"));
                    std::fs::write(dir.join(item["path"].as_str().expect("path")), content)
                        .expect("write secret");
                }
            } else {
                // Every key of the Secret, as a file of its name.
                let keys: Vec<(&String, &String)> = world
                    .secrets
                    .iter()
                    .filter(|((name, _), _)| name == secret)
                    .map(|((_, key), content)| (key, content))
                    .collect();
                assert!(!keys.is_empty(), "the pod mounts Secret {secret}");
                for (key, content) in keys {
                    std::fs::write(dir.join(key), content).expect("write secret");
                }
            }
        } else {
            assert!(volume["emptyDir"].is_object(), "unexpected volume {volume}");
        }
    }
    let command: Vec<&str> = container["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|part| part.as_str().expect("text"))
        .collect();
    let [program] = command.as_slice() else {
        panic!("the container command is one binary: {command:?}");
    };
    let name = program
        .strip_prefix("/usr/local/bin/")
        .unwrap_or_else(|| panic!("{program} is not where the Containerfile puts the binaries"));
    let args = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|arg| map_paths(arg.as_str().expect("text")))
        .collect();
    // Kubernetes' environment: in order, $(VAR) of an earlier variable expanded.
    let mut env: Vec<(String, String)> = Vec::new();
    for variable in container["env"].as_array().expect("env") {
        let name = variable["name"].as_str().expect("name").to_owned();
        let value = if let Some(value) = variable["value"].as_str() {
            env.iter().fold(value.to_owned(), |text, (earlier, value)| {
                text.replace(&format!("$({earlier})"), value)
            })
        } else if let Some(field) = variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match field {
                "metadata.name" => world.pod_name.clone(),
                "status.podIP" => world.pod_ip.clone(),
                other => panic!("no test value for the field {other}"),
            }
        } else if variable["valueFrom"]["secretKeyRef"].is_object() {
            let reference = &variable["valueFrom"]["secretKeyRef"];
            let key = (
                reference["name"].as_str().expect("name").to_owned(),
                reference["key"].as_str().expect("key").to_owned(),
            );
            world
                .secrets
                .get(&key)
                .unwrap_or_else(|| panic!("{name} needs Secret {key:?}"))
                .clone()
        } else {
            panic!("unexpected variable {variable}");
        };
        env.push((name, value));
    }
    RenderedProcess {
        program: binary(name),
        args,
        env,
        root: root.to_owned(),
    }
}

impl RenderedProcess {
    /// Starts it as a container would: a clean environment, only what was rendered.
    pub fn spawn(&self, log: &Path) -> std::process::Child {
        let log_file = std::fs::File::create(log).expect("log file");
        let stdout = log_file.try_clone().expect("log file");
        Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .current_dir(&self.root)
            .stdout(stdout)
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", self.program.display()))
    }
}

/// The containerPort named `name`.
pub fn container_port(deployment: &Value, name: &str) -> u16 {
    container(deployment)["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|port| port["name"] == name)
        .and_then(|port| port["containerPort"].as_u64())
        .and_then(|port| u16::try_from(port).ok())
        .unwrap_or_else(|| panic!("no container port {name}"))
}

/// A probe's gRPC port and service name ("" when absent).
pub fn grpc_probe(deployment: &Value, probe: &str) -> (u16, String) {
    let grpc = &container(deployment)[probe]["grpc"];
    let port = grpc["port"]
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
        .unwrap_or_else(|| panic!("{probe} is not a grpc probe: {grpc}"));
    (
        port,
        grpc["service"].as_str().unwrap_or_default().to_owned(),
    )
}
