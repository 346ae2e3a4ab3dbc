//! Which OCI runtime runs the sandboxes, and which ones this host has.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long `<runtime> --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Directories searched for runtime binaries besides `PATH` (`runc` lives
/// in `/usr/sbin` on Debian, which an unprivileged `PATH` lacks).
const SEARCH_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The OCI runtimes the backend knows how to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OciFlavor {
    /// gVisor: an application kernel between the sandbox and the host.
    Runsc,
    /// The reference runtime (Go).
    Runc,
    /// A small, fast runtime in C.
    Crun,
}

impl OciFlavor {
    pub const ALL: [OciFlavor; 3] = [OciFlavor::Runsc, OciFlavor::Runc, OciFlavor::Crun];

    /// The flavor's name, which is also its binary's usual name.
    pub fn name(self) -> &'static str {
        match self {
            OciFlavor::Runsc => "runsc",
            OciFlavor::Runc => "runc",
            OciFlavor::Crun => "crun",
        }
    }

    /// The name sandboxes ask for it by (`runtime: "gvisor"`).
    pub fn runtime_name(self) -> &'static str {
        match self {
            OciFlavor::Runsc => "gvisor",
            OciFlavor::Runc => "runc",
            OciFlavor::Crun => "crun",
        }
    }

    /// Finds the flavor's binary in `PATH` and the usual system directories.
    pub fn find_binary(self) -> Option<PathBuf> {
        let path_dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        path_dirs
            .into_iter()
            .chain(SEARCH_DIRS.iter().map(PathBuf::from))
            .filter(|d| d.is_absolute())
            .map(|d| d.join(self.name()))
            .find(|p| is_executable(p))
    }
}

impl fmt::Display for OciFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a string names no OCI runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown OCI runtime {0:?}: expected runsc, runc or crun")]
pub struct UnknownFlavor(pub String);

impl FromStr for OciFlavor {
    type Err = UnknownFlavor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "runsc" | "gvisor" => Ok(OciFlavor::Runsc),
            "runc" => Ok(OciFlavor::Runc),
            "crun" => Ok(OciFlavor::Crun),
            other => Err(UnknownFlavor(other.chars().take(64).collect())),
        }
    }
}

/// An OCI runtime found on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectedRuntime {
    pub flavor: OciFlavor,
    pub path: PathBuf,
    /// The first line of `<runtime> --version`, e.g. `runc version 1.1.5`.
    pub version: String,
}

/// The OCI runtimes installed on this host that answer `--version`, in
/// the order runsc, runc, crun.
pub fn detect() -> Vec<DetectedRuntime> {
    OciFlavor::ALL
        .into_iter()
        .filter_map(|flavor| {
            let path = flavor.find_binary()?;
            let version = version_of(&path).ok()?;
            Some(DetectedRuntime {
                flavor,
                path,
                version,
            })
        })
        .collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first line of `<path> --version`, with a time limit.
pub(crate) fn version_of(path: &Path) -> Result<String, String> {
    let mut child = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{} --version` could not start: {e}", path.display()))?;
    let pid = child.id() as i32;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send((out, err));
    });
    let Ok((out, err)) = rx.recv_timeout(VERSION_TIMEOUT) else {
        // Still our unreaped child, so the pid cannot have been reused.
        let _ = capsule_sys::process::kill(pid, libc::SIGKILL);
        let _ = child.wait();
        return Err(format!(
            "`{} --version` did not finish within {}s",
            path.display(),
            VERSION_TIMEOUT.as_secs()
        ));
    };
    let status = child
        .wait()
        .map_err(|e| format!("waiting for `{} --version`: {e}", path.display()))?;
    let first = out.lines().next().unwrap_or("").trim().to_owned();
    if !status.success() || first.is_empty() {
        return Err(format!(
            "`{} --version` {status}: {}",
            path.display(),
            err.trim()
        ));
    }
    Ok(first)
}

/// The release date (`YYYYMMDD`) in a runsc version line such as
/// `runsc version release-20240513.0` or `runsc version 0.0~20221219.0`.
pub(crate) fn runsc_release_date(version: &str) -> Option<u32> {
    let bytes = version.as_bytes();
    (0..bytes.len().saturating_sub(7)).find_map(|i| {
        let digits = &bytes[i..i + 8];
        let before_ok = i == 0 || !bytes[i - 1].is_ascii_digit();
        let after_ok = bytes.get(i + 8).is_none_or(|b| !b.is_ascii_digit());
        (before_ok && after_ok && digits.iter().all(u8::is_ascii_digit) && digits[0] == b'2')
            .then(|| std::str::from_utf8(digits).ok()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in OciFlavor::ALL {
            assert_eq!(f.name().parse::<OciFlavor>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!("gvisor".parse::<OciFlavor>().unwrap(), OciFlavor::Runsc);
        assert!("docker".parse::<OciFlavor>().is_err());
    }

    #[test]
    fn runsc_dates() {
        assert_eq!(
            runsc_release_date("runsc version 0.0~20221219.0"),
            Some(20221219)
        );
        assert_eq!(
            runsc_release_date("runsc version release-20240513.0"),
            Some(20240513)
        );
        assert_eq!(runsc_release_date("runsc version 1.2.3"), None);
        assert_eq!(runsc_release_date("runsc version 202212190"), None);
    }

    #[test]
    fn a_missing_binary_is_an_error_naming_it() {
        let err = version_of(Path::new("/nonexistent/runc")).unwrap_err();
        assert!(err.contains("/nonexistent/runc"), "{err}");
    }
}
