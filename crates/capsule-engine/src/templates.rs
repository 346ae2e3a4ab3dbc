//! Templates: what a sandbox starts as. The built-in ones need nothing but
//! the host's own system directories; each says how `run` executes code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use capsule_runtime::TemplateSpec;
use serde::{Deserialize, Serialize};

/// How `sandbox.v1.run` turns code into a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RunStyle {
    /// `argv... <code>`, e.g. `python3 -c <code>`.
    Argument { argv: Vec<String> },
    /// The code is written to stdin of `argv`, e.g. a compile-and-run
    /// script; `shown` is how that is described to users.
    Stdin {
        argv: Vec<String>,
        shown: Vec<String>,
    },
}

impl RunStyle {
    /// The argv (and stdin) that runs `code`.
    pub fn command(&self, code: &str) -> (Vec<String>, Option<String>) {
        match self {
            RunStyle::Argument { argv } => {
                let mut a = argv.clone();
                a.push(code.to_owned());
                (a, None)
            }
            RunStyle::Stdin { argv, .. } => (argv.clone(), Some(code.to_owned())),
        }
    }

    /// A short description, e.g. `python3 -c`.
    pub fn describe(&self) -> Vec<String> {
        match self {
            RunStyle::Argument { argv } => argv.clone(),
            RunStyle::Stdin { shown, .. } => shown.clone(),
        }
    }
}

/// A template definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub description: String,
    pub run: RunStyle,
    pub env: BTreeMap<String, String>,
    pub requires: Vec<String>,
    #[serde(default)]
    pub extra_binds: Vec<PathBuf>,
    /// The backend its sandboxes run on unless a create says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

impl Template {
    pub fn spec(&self) -> TemplateSpec {
        TemplateSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            env: self.env.clone(),
            requires: self.requires.clone(),
            extra_binds: self.extra_binds.clone(),
        }
    }
}

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn base_env() -> BTreeMap<String, String> {
    [
        ("PATH", SYSTEM_PATH),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C.UTF-8"),
        ("SHELL", "/bin/bash"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Where a Go toolchain lives on this host, if it has one.
pub fn find_goroot() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = vec!["/usr/local/go".into(), "/usr/lib/go".into()];
    if let Ok(path) = std::env::var("PATH") {
        for dir in path.split(':') {
            let go = Path::new(dir).join("go");
            if go.is_file()
                && let Ok(real) = std::fs::canonicalize(&go)
                && let Some(root) = real.parent().and_then(Path::parent)
            {
                candidates.push(root.to_path_buf());
            }
        }
    }
    candidates
        .into_iter()
        .find(|root| root.join("bin/go").is_file())
}

/// The templates every Capsule server offers.
pub fn builtin() -> Vec<Template> {
    let mut python_env = base_env();
    python_env.insert("PYTHONUNBUFFERED".into(), "1".into());
    let mut node_env = base_env();
    node_env.insert("NODE_ENV".into(), "development".into());
    let goroot = find_goroot().unwrap_or_else(|| PathBuf::from("/usr/local/go"));
    let mut go_env = base_env();
    go_env.insert(
        "PATH".into(),
        format!("{}/bin:{SYSTEM_PATH}", goroot.display()),
    );
    go_env.insert("GOROOT".into(), goroot.display().to_string());
    // No network: never try to download toolchains or modules.
    go_env.insert("GOTOOLCHAIN".into(), "local".into());
    go_env.insert("GOPROXY".into(), "off".into());
    go_env.insert("GOFLAGS".into(), "-mod=mod".into());
    let go_binds = if goroot.starts_with("/usr") {
        Vec::new()
    } else {
        vec![goroot.clone()]
    };
    vec![
        Template {
            name: "base".into(),
            description:
                "A Linux userland from the host's /usr: bash, coreutils and the usual tools".into(),
            run: RunStyle::Argument {
                argv: vec!["sh".into(), "-c".into()],
            },
            env: base_env(),
            requires: vec!["sh".into(), "bash".into()],
            extra_binds: Vec::new(),
            runtime: None,
        },
        Template {
            name: "python".into(),
            description: "Python 3 (the host's python3) with its standard library".into(),
            run: RunStyle::Argument {
                argv: vec!["python3".into(), "-c".into()],
            },
            env: python_env.clone(),
            requires: vec!["python3".into()],
            extra_binds: Vec::new(),
            runtime: None,
        },
        Template {
            name: "code-interpreter-v1".into(),
            description: "Python 3 for E2B's code interpreter SDKs: stateful Python, \
                          JavaScript (when node is installed) and bash contexts"
                .into(),
            run: RunStyle::Argument {
                argv: vec!["python3".into(), "-c".into()],
            },
            env: python_env.clone(),
            requires: vec!["python3".into(), "bash".into()],
            extra_binds: Vec::new(),
            runtime: None,
        },
        Template {
            name: "node".into(),
            description: "Node.js (the host's node)".into(),
            run: RunStyle::Argument {
                argv: vec!["node".into(), "-e".into()],
            },
            env: node_env,
            requires: vec!["node".into()],
            extra_binds: Vec::new(),
            runtime: None,
        },
        Template {
            name: "go".into(),
            description: "Go (the host's toolchain); run compiles and runs a main package".into(),
            run: RunStyle::Stdin {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    "d=$(mktemp -d) && cat > \"$d/main.go\" && cd \"$d\" && exec go run main.go"
                        .into(),
                ],
                shown: vec!["go".into(), "run".into(), "main.go".into()],
            },
            env: go_env,
            requires: vec!["go".into()],
            extra_binds: go_binds,
            runtime: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_the_documented_five() {
        let names: Vec<_> = builtin().into_iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            ["base", "python", "code-interpreter-v1", "node", "go"]
        );
    }

    #[test]
    fn run_styles() {
        let t = builtin().into_iter().find(|t| t.name == "python").unwrap();
        assert_eq!(
            t.run.command("print(1)"),
            (vec!["python3".into(), "-c".into(), "print(1)".into()], None)
        );
        let go = builtin().into_iter().find(|t| t.name == "go").unwrap();
        let (argv, stdin) = go.run.command("package main");
        assert_eq!(argv[0], "sh");
        assert_eq!(stdin.as_deref(), Some("package main"));
    }

    #[test]
    fn definitions_round_trip_as_json() {
        for t in builtin() {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Template>(&json).unwrap(), t);
        }
    }
}
