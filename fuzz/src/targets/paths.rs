//! `capsule_engine::paths::sandbox_path`: every path the JSON-RPC and MCP
//! doors take. A resolved path never climbs above the sandbox's root.

use capsule_api::ErrorKind;
use capsule_engine::paths::{WORKSPACE, sandbox_path};

use super::{ensure, sig, text};
use crate::Target;

pub const SANDBOX_PATH: Target = Target {
    name: "sandbox_path",
    about: "sandbox_path: clean absolute paths, never above /, idempotent, agrees with a model",
    seeds: || {
        [
            "app.py",
            "./a/../b",
            "/workspace/app.py",
            "/etc//passwd",
            "../etc/passwd",
            "/",
            "/../etc/passwd",
            "../../../etc",
            "/workspace/../../..",
            "a/./b/../../../c",
            "~/x",
            "%2e%2e/%2e%2e",
            "..\\..\\windows",
            "a\0b",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dictionary: &[
        b"/",
        b"..",
        b".",
        b"../",
        b"/..",
        b"//",
        b"./",
        b"\0",
        b"%2e",
        b"~",
        b"\\",
        b"workspace",
    ],
    run,
};

/// What a correct normalizer answers: the clean path, or which refusal.
fn model(path: &str) -> Result<String, &'static str> {
    if path.is_empty() || path.contains('\0') || path.len() > 4096 {
        return Err("invalid");
    }
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{WORKSPACE}/{path}")
    };
    let resolved = clean(&joined)?;
    if resolved.len() > 4096 {
        return Err("invalid");
    }
    Ok(resolved)
}

/// `joined` (absolute) with `.`, `..` and empty components resolved, or
/// "outside" when `..` climbs above `/`. No length limit: that belongs to
/// the caller's input, not to a path built from a clean one.
fn clean(joined: &str) -> Result<String, &'static str> {
    let mut depth: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return Err("outside");
                }
            }
            p => depth.push(p),
        }
    }
    Ok(format!("/{}", depth.join("/")))
}

fn run(input: &[u8]) -> Result<u64, String> {
    let path = text(input);
    let got = sandbox_path(&path);
    let want = model(&path);
    match (&got, &want) {
        (Ok(out), Ok(expected)) => {
            ensure(out == expected, || {
                format!("{path:?} -> {out:?}, expected {expected:?}")
            })?;
            ensure(out.starts_with('/'), || format!("{out:?} is not absolute"))?;
            ensure(out == "/" || !out.ends_with('/'), || {
                format!("{out:?} ends with /")
            })?;
            ensure(!out.contains("//"), || {
                format!("{out:?} has an empty component")
            })?;
            ensure(out.split('/').all(|c| c != "." && c != ".."), || {
                format!("{out:?} still has . or .. in it")
            })?;
            ensure(!out.contains('\0'), || format!("{out:?} has a NUL byte"))?;
            // Resolving it again changes nothing.
            let again = sandbox_path(out)
                .map_err(|e| format!("{out:?} no longer resolves: {}", e.message))?;
            ensure(&again == out, || {
                format!("not idempotent: {out:?} -> {again:?}")
            })?;
            // Joined under any root, it stays there.
            let root = "/srv/sandboxes/abcd1234/root";
            let joined = format!("{root}{out}");
            ensure(clean(&joined).is_ok_and(|j| j.starts_with(root)), || {
                format!("{out:?} leaves {root}")
            })?;
            Ok(sig(("ok", out.matches('/').count().min(16))))
        }
        (Err(e), Err(why)) => {
            let expected = if *why == "outside" {
                ErrorKind::PathOutsideSandbox
            } else {
                ErrorKind::InvalidParams
            };
            ensure(e.kind == expected, || {
                format!("{path:?} refused as {:?}, expected {expected:?}", e.kind)
            })?;
            Ok(sig(("refused", why)))
        }
        (Ok(out), Err(why)) => Err(format!(
            "{path:?} resolved to {out:?}; it should be refused ({why})"
        )),
        (Err(e), Ok(expected)) => Err(format!(
            "{path:?} was refused ({}); it resolves to {expected:?}",
            e.message
        )),
    }
}
