//! Parsing `/proc/self/mountinfo` and `/proc/self/cgroup`.

use std::path::PathBuf;

/// A cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// The path within the hierarchy that is mounted (usually `/`).
    pub root: String,
    pub unified: bool,
    /// v1 controllers (from the super options); empty for v2.
    pub controllers: Vec<String>,
}

/// Decodes the octal escapes mountinfo uses for spaces and the like.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4);
        if bytes[i] == b'\\'
            && let Some(digits) = octal
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts listed in mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (fstype, super_opts) = (post[0], post[2]);
        let unified = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if unified {
            Vec::new()
        } else {
            super_opts
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                .map(str::to_owned)
                .collect()
        };
        mounts.push(CgroupMount {
            mount_point: PathBuf::from(unescape(pre[4])),
            root: unescape(pre[3]),
            unified,
            controllers,
        });
    }
    mounts
}

/// `(controllers, path)` pairs from `/proc/self/cgroup` text; the v2 entry
/// has no controllers.
pub fn parse_self_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let ctrls = parts.next()?;
            let path = parts.next()?;
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            Some((ctrls, path.to_owned()))
        })
        .collect()
}
