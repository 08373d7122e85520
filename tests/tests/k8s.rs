//! The Kubernetes manifests (`k8s/`) agree with the code: every `TOLLGATE_*` variable they
//! set is a flag of the plane that reads it, and each plane's pod grace period is longer
//! than its drain budget (the manifest's value and the flag's default alike) plus its
//! preStop pause. Rendering and schema validation run in CI (`.ci/k8s-check`).
//!
//! The manifests are read as text, one YAML document at a time: they are written in a
//! plain style (one `key: value` per line where it matters here) so that this stays simple.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

/// What a plane needs between its drain's end and the kill: exit after the budget.
const MARGIN_SECS: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plane {
    Control,
    Data,
}

impl Plane {
    fn of(name: &str) -> Option<Self> {
        match name {
            "tollgate-control-plane" => Some(Self::Control),
            "tollgate-data-plane" => Some(Self::Data),
            _ => None,
        }
    }

    fn command(self) -> clap::Command {
        match self {
            Self::Control => tollgate_control_plane::Config::command(),
            Self::Data => tollgate_data_plane::Config::command(),
        }
    }

    fn env_names(self) -> BTreeSet<String> {
        self.command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect()
    }

    fn default_drain_secs(self) -> u64 {
        let cmd = self.command();
        let arg = cmd
            .get_arguments()
            .find(|a| {
                a.get_env()
                    .is_some_and(|e| e == "TOLLGATE_DRAIN_TIMEOUT_SECS")
            })
            .expect("both planes have the drain budget flag");
        arg.get_default_values()[0]
            .to_string_lossy()
            .parse()
            .unwrap()
    }
}

/// One YAML document of a manifest.
struct Doc {
    file: PathBuf,
    kind: String,
    name: String,
    text: String,
}

impl Doc {
    /// `key: value` lines (any indentation) with this key, their values unquoted.
    fn values(&self, key: &str) -> Vec<String> {
        self.text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .collect()
    }

    /// `TOLLGATE_*` names set here: ConfigMap keys and `- name:` of env entries.
    fn variables(&self) -> Vec<String> {
        self.text
            .lines()
            .map(|l| l.trim_start().trim_start_matches("- name:").trim_start())
            .filter(|l| l.starts_with("TOLLGATE_"))
            .filter_map(|l| l.split(':').next())
            .map(str::to_owned)
            .collect()
    }
}

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

fn docs() -> Vec<Doc> {
    let mut files = Vec::new();
    yaml_files(&k8s_dir(), &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for part in text.split("\n---") {
            let kind = part
                .lines()
                .find_map(|l| l.strip_prefix("kind:"))
                .map(|k| k.trim().to_owned())
                .unwrap_or_default();
            // `metadata:` then its `  name:` (the first two-space `name:` after it).
            let name = part
                .split_once("\nmetadata:")
                .and_then(|(_, rest)| {
                    rest.lines()
                        .find_map(|l| l.strip_prefix("  name:"))
                        .map(|n| n.trim().to_owned())
                })
                .unwrap_or_default();
            out.push(Doc {
                file: file.clone(),
                kind,
                name,
                text: part.to_owned(),
            });
        }
    }
    assert!(out.len() > 20, "the manifests were found");
    out
}

#[test]
fn every_variable_in_the_manifests_is_a_flag_of_its_plane() {
    let control = Plane::Control.env_names();
    let data = Plane::Data.env_names();
    let mut checked = 0;
    for doc in docs() {
        let plane = match doc.kind.as_str() {
            "ConfigMap" | "Deployment" => Plane::of(&doc.name),
            _ => None,
        };
        for var in doc.variables() {
            let known = match plane {
                Some(Plane::Control) => control.contains(&var),
                Some(Plane::Data) => data.contains(&var),
                // Elsewhere (comments, other objects): a flag of either plane.
                None => control.contains(&var) || data.contains(&var),
            };
            assert!(
                known,
                "{} ({} {}): {var} is not a flag of {plane:?}",
                doc.file.display(),
                doc.kind,
                doc.name,
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} variables found");
}

#[test]
fn each_plane_s_grace_period_outlasts_its_drain_budget() {
    let docs = docs();
    for plane in [Plane::Control, Plane::Data] {
        let default = plane.default_drain_secs();
        let configured: Vec<u64> = docs
            .iter()
            .filter(|d| d.kind == "ConfigMap" && Plane::of(&d.name) == Some(plane))
            .flat_map(|d| d.values("TOLLGATE_DRAIN_TIMEOUT_SECS"))
            .map(|v| v.parse().unwrap())
            .collect();
        // The manifest states the budget, and it is the flag's default: dropping the line
        // changes nothing.
        assert_eq!(
            configured,
            vec![default],
            "{plane:?}'s budget in config.yaml"
        );
        let pods: Vec<&Doc> = docs
            .iter()
            .filter(|d| d.kind == "Deployment" && Plane::of(&d.name) == Some(plane))
            .collect();
        let mut graces = 0;
        for doc in pods {
            let pause: u64 = doc
                .text
                .split_once("preStop:")
                .and_then(|(_, rest)| {
                    rest.lines()
                        .find_map(|l| l.trim().strip_prefix("sleep: { seconds:"))
                })
                .map(|v| v.trim_end_matches('}').trim().parse().unwrap())
                .unwrap_or(0);
            for grace in doc.values("terminationGracePeriodSeconds") {
                let grace: u64 = grace.parse().unwrap();
                assert!(
                    grace >= pause + default + MARGIN_SECS,
                    "{}: {plane:?} grace {grace} s < preStop {pause} s + drain {default} s + {MARGIN_SECS} s",
                    doc.file.display()
                );
                graces += 1;
            }
        }
        assert!(graces > 0, "{plane:?} has a terminationGracePeriodSeconds");
    }
}
