//! Paths as the API takes them: inside the sandbox, relative to
//! `/workspace`, never above `/`.

use capsule_api::{ApiError, ErrorKind};

pub const WORKSPACE: &str = "/workspace";

/// Turns a request path into a clean absolute path inside the sandbox.
/// `..` is resolved lexically; climbing above `/` is refused rather than
/// silently clamped, because it shows the caller meant to leave the sandbox.
pub fn sandbox_path(path: &str) -> Result<String, ApiError> {
    if path.is_empty() {
        return Err(ApiError::invalid_params("`path` is empty"));
    }
    if path.contains('\0') {
        return Err(ApiError::invalid_params("`path` contains a NUL byte"));
    }
    if path.len() > 4096 {
        return Err(ApiError::invalid_params(format!(
            "`path` is {} bytes long; the limit is 4096",
            path.len()
        )));
    }
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{WORKSPACE}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ApiError::new(
                        ErrorKind::PathOutsideSandbox,
                        format!("path {path:?} climbs above the sandbox's root directory"),
                    )
                    .with_detail("path", path));
                }
            }
            p => parts.push(p),
        }
    }
    let resolved = format!("/{}", parts.join("/"));
    // A relative path gains the workspace prefix: the result must still be
    // one the API takes back.
    if resolved.len() > 4096 {
        return Err(ApiError::invalid_params(format!(
            "`path` resolves to {} bytes; the limit is 4096",
            resolved.len()
        )));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_inside_the_sandbox() {
        assert_eq!(sandbox_path("app.py").unwrap(), "/workspace/app.py");
        assert_eq!(sandbox_path("./a/../b").unwrap(), "/workspace/b");
        assert_eq!(
            sandbox_path("/workspace/app.py").unwrap(),
            "/workspace/app.py"
        );
        assert_eq!(sandbox_path("/etc//passwd").unwrap(), "/etc/passwd");
        assert_eq!(sandbox_path("../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(sandbox_path("/").unwrap(), "/");
    }

    #[test]
    fn a_relative_path_may_not_resolve_past_the_length_limit() {
        // 4090 bytes are fine as given, but not with `/workspace/` in front:
        // the answer would be a path the API refuses to take back.
        let long = "a".repeat(4090);
        let e = sandbox_path(&long).unwrap_err();
        assert!(
            e.message.contains("resolves to 4101 bytes"),
            "{}",
            e.message
        );
        let fits = "a".repeat(4085);
        assert_eq!(sandbox_path(&fits).unwrap().len(), 4096);
    }

    #[test]
    fn refuses_escapes_and_junk() {
        for bad in [
            "/../etc/passwd",
            "../../etc/passwd",
            "../../../etc",
            "/workspace/../../..",
        ] {
            let e = sandbox_path(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::PathOutsideSandbox, "{bad}");
            assert!(e.message.contains(bad), "{}", e.message);
        }
        assert_eq!(sandbox_path("").unwrap_err().kind, ErrorKind::InvalidParams);
        assert_eq!(
            sandbox_path("a\0b").unwrap_err().kind,
            ErrorKind::InvalidParams
        );
        assert_eq!(
            sandbox_path(&"a/".repeat(3000)).unwrap_err().kind,
            ErrorKind::InvalidParams
        );
    }
}
