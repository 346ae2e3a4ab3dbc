//! The agent's own parsers: `users::resolve` for every envd path,
//! `files::percent_decode`/`parse_query` for `/files`, the Basic
//! authorization header that names the user, and `/etc/passwd` (which
//! sandbox root controls).

use std::path::Path;

use capsule_agent::fuzzing::{
    Identity, parse_passwd, parse_query, percent_decode, resolve, user_from_basic_auth,
};
use capsule_protocol::client::percent_encode;

use super::{ensure, sig, text};
use crate::Target;

fn user() -> Identity {
    Identity {
        name: "user".into(),
        uid: 1000,
        gid: 1000,
        home: "/home/user".into(),
        shell: "/bin/bash".into(),
    }
}

pub const PATHS: Target = Target {
    name: "agent_resolve",
    about: "users::resolve: absolute results, relative paths under the home, ~ expansion, no NUL",
    seeds: || {
        [
            "a.txt",
            "~",
            "~/b",
            "/workspace/c",
            "../../etc",
            "~root",
            "",
            "a\0b",
            "~/../../..",
            "/",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dictionary: &[b"~", b"~/", b"/", b"..", b"\0", b".", b"//"],
    run: paths,
};

fn paths(input: &[u8]) -> Result<u64, String> {
    let path = text(input);
    let id = user();
    match resolve(&path, &id) {
        Ok(p) => {
            ensure(!path.is_empty() && !path.contains('\0'), || {
                format!("{path:?} should have been refused")
            })?;
            ensure(p.is_absolute(), || {
                format!("{path:?} -> {} is relative", p.display())
            })?;
            if path.starts_with('/') {
                ensure(p == Path::new(&path), || {
                    format!("an absolute path changed: {}", p.display())
                })?;
            } else if path.starts_with("~//") {
                // `~//x` resolves to `/x` (PathBuf::join with an absolute
                // part), where a shell says `/home/user//x`. Harmless: any
                // absolute path may be asked for directly.
            } else {
                ensure(p.starts_with(&id.home), || {
                    format!("relative {path:?} -> {} is not under the home", p.display())
                })?;
            }
            Ok(sig(("ok", path.starts_with('/'), path.starts_with('~'))))
        }
        Err(_) => {
            ensure(path.is_empty() || path.contains('\0'), || {
                format!("{path:?} was refused")
            })?;
            Ok(sig("refused"))
        }
    }
}

pub const QUERY: Target = Target {
    name: "agent_query",
    about: "files::percent_decode and parse_query: no panic, decode(encode(x)) == x",
    seeds: || {
        [
            "path=%2Fworkspace%2Fa%20b.txt&username=user&x",
            "path=/home/user/a.txt&username=root&signature=v1_abc&signature_expiration=1",
            "100%&%zz=%f0%9f%92%a9&a+b=c+d",
            "&&&==&path=&path=/x",
            "%",
            "%2",
            "%%32%65",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dictionary: &[
        b"%",
        b"%2e",
        b"%2F",
        b"%00",
        b"%ff",
        b"+",
        b"&",
        b"=",
        b"path=",
        b"username=",
        b"%+1",
        b"%-1",
    ],
    run: query,
};

fn query(input: &[u8]) -> Result<u64, String> {
    let q = text(input);
    let decoded = percent_decode(&q);
    // Each escape turns three bytes into one; a replacement character for
    // an invalid byte is three bytes again: never longer than the input.
    ensure(decoded.len() <= q.len(), || {
        format!("decoding grew {} bytes into {}", q.len(), decoded.len())
    })?;
    let again = percent_decode(&percent_encode(&q));
    ensure(again == q, || format!("decode(encode({q:?})) = {again:?}"))?;
    let pairs = parse_query(Some(&q));
    let parts = q.split('&').filter(|p| !p.is_empty()).count();
    ensure(pairs.len() <= parts, || "more parameters than parts".into())?;
    for (k, v) in &pairs {
        ensure(k.len() <= q.len() && v.len() <= q.len(), || {
            "a parameter grew".into()
        })?;
    }
    Ok(sig((pairs.len().min(8), decoded.len() < q.len())))
}

pub const HEADERS: Target = Target {
    name: "agent_identity",
    about: "the Basic authorization header that names the user, and /etc/passwd parsing",
    seeds: || {
        [
            "Basic dXNlcjo=",
            "Basic cm9vdDo=",
            "basic Og==",
            "Bearer x",
            "Basic !!!",
            "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n",
            "a:b:c:d:e:f:g:h\n#x\n::::::\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dictionary: &[
        b"Basic ",
        b"=",
        b":",
        b"\n",
        b"x:0:0:",
        b"4294967296",
        b"-1",
    ],
    run: identity,
};

fn identity(input: &[u8]) -> Result<u64, String> {
    let s = text(input);
    let named = user_from_basic_auth(&s);
    if let Some(u) = &named {
        ensure(!u.is_empty() && !u.contains(':'), || {
            format!("a user name {u:?}")
        })?;
        ensure(u.trim() == u, || format!("an untrimmed user name {u:?}"))?;
    }
    let users = parse_passwd(&s);
    for u in &users {
        ensure(!u.name.contains('\n') && !u.name.contains(':'), || {
            format!("a passwd name {:?}", u.name)
        })?;
    }
    Ok(sig((named.is_some(), users.len().min(4))))
}
