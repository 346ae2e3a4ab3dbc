//! `cp`: files and directories in and out of a sandbox, like `docker cp`.
//! `-` as the local side means standard input or output (files only).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use capsule_api::sandbox::{
    DirEntry, EntryResult, EntryType, ListDirResult, ReadFileResult, WriteFileResult,
    decode_base64, encode_base64, methods,
};
use serde_json::json;

use super::print_json;
use super::sandbox::split_remote;
use crate::args::CpArgs;
use crate::client::{CallError, Client};

struct Copied {
    files: usize,
    bytes: u64,
}

pub async fn run(client: &Client, a: CpArgs, json: bool) -> anyhow::Result<ExitCode> {
    let copied = match (split_remote(&a.src), split_remote(&a.dst)) {
        (Some(_), Some(_)) => bail!("both sides are inside sandboxes; copy through a local path"),
        (None, None) => bail!("neither side names a sandbox; write one side as ID:PATH"),
        (None, Some((id, path))) => upload(client, &a.src, id, path).await?,
        (Some((id, path)), None) => download(client, id, path, &a.dst).await?,
    };
    if json {
        print_json(&json!({ "files": copied.files, "bytes": copied.bytes }));
    } else if a.dst != "-" {
        eprintln!("copied {} file(s), {} bytes", copied.files, copied.bytes);
    }
    Ok(ExitCode::SUCCESS)
}

async fn remote_stat(client: &Client, id: &str, path: &str) -> anyhow::Result<Option<DirEntry>> {
    match client
        .call::<EntryResult>(methods::STAT, json!({ "id": id, "path": path }))
        .await
    {
        Ok(r) => Ok(Some(r.entry)),
        Err(CallError::Api(e)) if e.kind == capsule_api::ErrorKind::FileNotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn base_name(path: &str) -> anyhow::Result<String> {
    Path::new(path.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{path:?} has no file name"))
}

async fn upload(client: &Client, local: &str, id: &str, remote: &str) -> anyhow::Result<Copied> {
    let remote = if remote.is_empty() {
        "/workspace/"
    } else {
        remote
    };
    if local == "-" {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading standard input")?;
        let r: WriteFileResult = client
            .call(
                methods::WRITE_FILE,
                json!({ "id": id, "path": remote, "content": encode_base64(&data) }),
            )
            .await?;
        return Ok(Copied {
            files: 1,
            bytes: r.size,
        });
    }
    let meta = std::fs::metadata(local).with_context(|| format!("cannot read {local}"))?;
    // Into an existing directory (or a path ending in /): keep the name.
    let existing = remote_stat(client, id, remote).await?;
    let target =
        if remote.ends_with('/') || existing.as_ref().is_some_and(|e| e.kind == EntryType::Dir) {
            format!("{}/{}", remote.trim_end_matches('/'), base_name(local)?)
        } else {
            remote.to_owned()
        };
    let mut copied = Copied { files: 0, bytes: 0 };
    if meta.is_dir() {
        upload_dir(client, Path::new(local), id, &target, &mut copied).await?;
    } else {
        upload_file(client, Path::new(local), id, &target, &mut copied).await?;
    }
    Ok(copied)
}

async fn upload_file(
    client: &Client,
    local: &Path,
    id: &str,
    remote: &str,
    copied: &mut Copied,
) -> anyhow::Result<()> {
    let data = std::fs::read(local).with_context(|| format!("cannot read {}", local.display()))?;
    let mode = std::fs::metadata(local)?.permissions().mode() & 0o777;
    let r: WriteFileResult = client
        .call(
            methods::WRITE_FILE,
            json!({ "id": id, "path": remote, "content": encode_base64(&data), "mode": format!("{mode:o}") }),
        )
        .await?;
    copied.files += 1;
    copied.bytes += r.size;
    Ok(())
}

async fn upload_dir(
    client: &Client,
    local: &Path,
    id: &str,
    remote: &str,
    copied: &mut Copied,
) -> anyhow::Result<()> {
    match client
        .call::<EntryResult>(methods::MAKE_DIR, json!({ "id": id, "path": remote }))
        .await
    {
        Ok(_) => {}
        Err(CallError::Api(e)) if e.kind == capsule_api::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    let mut entries: Vec<_> = std::fs::read_dir(local)
        .with_context(|| format!("cannot list {}", local.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let child_remote = format!("{}/{name}", remote.trim_end_matches('/'));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            Box::pin(upload_dir(client, &entry.path(), id, &child_remote, copied)).await?;
        } else if kind.is_file() {
            upload_file(client, &entry.path(), id, &child_remote, copied).await?;
        } else {
            eprintln!(
                "capsule: skipping {} (not a regular file or directory)",
                entry.path().display()
            );
        }
    }
    Ok(())
}

async fn download(client: &Client, id: &str, remote: &str, local: &str) -> anyhow::Result<Copied> {
    let remote = if remote.is_empty() {
        "/workspace"
    } else {
        remote
    };
    let entry = remote_stat(client, id, remote)
        .await?
        .ok_or_else(|| anyhow!("{id}:{remote} does not exist"))?;
    let mut copied = Copied { files: 0, bytes: 0 };
    if local == "-" {
        if entry.kind == EntryType::Dir {
            bail!("{id}:{remote} is a directory; copy it to a local path instead of -");
        }
        let data = read_remote(client, id, remote).await?;
        std::io::stdout().write_all(&data)?;
        copied.files = 1;
        copied.bytes = data.len() as u64;
        return Ok(copied);
    }
    let local_path = PathBuf::from(local);
    let target = if local_path.is_dir() {
        local_path.join(base_name(remote)?)
    } else {
        local_path
    };
    if entry.kind == EntryType::Dir {
        download_dir(client, id, remote, &target, &mut copied).await?;
    } else {
        download_file(client, id, remote, entry.mode, &target, &mut copied).await?;
    }
    Ok(copied)
}

async fn read_remote(client: &Client, id: &str, remote: &str) -> anyhow::Result<Vec<u8>> {
    let r: ReadFileResult = client
        .call(methods::READ_FILE, json!({ "id": id, "path": remote }))
        .await?;
    Ok(decode_base64(&r.content, "content")?)
}

async fn download_file(
    client: &Client,
    id: &str,
    remote: &str,
    mode: u32,
    local: &Path,
    copied: &mut Copied,
) -> anyhow::Result<()> {
    let data = read_remote(client, id, remote).await?;
    std::fs::write(local, &data).with_context(|| format!("cannot write {}", local.display()))?;
    if mode != 0 {
        let _ = std::fs::set_permissions(local, std::fs::Permissions::from_mode(mode & 0o777));
    }
    copied.files += 1;
    copied.bytes += data.len() as u64;
    Ok(())
}

async fn download_dir(
    client: &Client,
    id: &str,
    remote: &str,
    local: &Path,
    copied: &mut Copied,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(local).with_context(|| format!("cannot create {}", local.display()))?;
    let listing: ListDirResult = client
        .call(methods::LIST_DIR, json!({ "id": id, "path": remote }))
        .await?;
    for e in listing.entries {
        let target = local.join(&e.name);
        match e.kind {
            EntryType::Dir => Box::pin(download_dir(client, id, &e.path, &target, copied)).await?,
            EntryType::File => download_file(client, id, &e.path, e.mode, &target, copied).await?,
            _ => eprintln!("capsule: skipping {} ({:?})", e.path, e.kind),
        }
    }
    Ok(())
}
