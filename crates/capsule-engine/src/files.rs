//! File operations: paths are checked here, the agent does the I/O with the
//! requesting user's permissions.

use bytes::Bytes;
use capsule_api::sandbox::{DirEntry, EntryType, RunAs, WriteFileResult};
use capsule_api::timefmt::{format_rfc3339_millis, parse_rfc3339};
use capsule_api::{ApiError, ErrorKind, SandboxId};
use capsule_protocol::client::{CallOptions, full_body};
use capsule_protocol::filesystem::{
    EntryInfo, EntryResponse, FileType, ListDirRequest, ListDirResponse, PathRequest,
};
use capsule_protocol::paths;
use capsule_protocol::process::Empty;
use http_body_util::BodyExt;

use crate::engine::Engine;
use crate::errors::{from_agent, from_agent_file};
use crate::paths::sandbox_path;
use crate::tenancy::Principal;

/// Converts the agent's entry into the API's.
pub fn dir_entry(e: EntryInfo) -> DirEntry {
    let kind = if e.symlink_target.is_some() {
        EntryType::Symlink
    } else {
        match e.file_type {
            FileType::Directory => EntryType::Dir,
            FileType::File => EntryType::File,
            FileType::Unspecified => EntryType::Other,
        }
    };
    let modified_at = e
        .modified_time
        .as_deref()
        .and_then(parse_rfc3339)
        .map(format_rfc3339_millis)
        .unwrap_or_default();
    DirEntry {
        name: e.name,
        path: e.path,
        kind,
        size: u64::try_from(e.size).unwrap_or(0),
        mode: e.mode & 0o7777,
        modified_at,
        symlink_target: e.symlink_target,
    }
}

fn opts(user: Option<RunAs>) -> CallOptions {
    CallOptions::user(user.unwrap_or_default().username())
}

impl Engine {
    pub async fn write_file(
        &self,
        who: &Principal,
        id: SandboxId,
        path: &str,
        content: Vec<u8>,
        mode: Option<u32>,
        user: Option<RunAs>,
    ) -> Result<WriteFileResult, ApiError> {
        let result = self
            .write_file_checked(who, id, path, content, mode, user)
            .await;
        self.audit(who, "sandbox.v1.writeFile", Some(id.as_str()), &result);
        result
    }

    async fn write_file_checked(
        &self,
        who: &Principal,
        id: SandboxId,
        path: &str,
        content: Vec<u8>,
        mode: Option<u32>,
        user: Option<RunAs>,
    ) -> Result<WriteFileResult, ApiError> {
        let path = sandbox_path(path)?;
        if path == "/" {
            return Err(ApiError::new(
                ErrorKind::IsADirectory,
                "cannot write to / (the root directory)",
            ));
        }
        let size = content.len() as u64;
        if size > self.config.max_file_bytes {
            return Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "the file is {size} bytes; the limit is {}",
                    self.config.max_file_bytes
                ),
            ));
        }
        let live = self.usable(who, id).await?;
        let user = user.unwrap_or_default();
        live.agent
            .write_file(
                &path,
                Some(user.username()),
                mode,
                full_body(Bytes::from(content)),
            )
            .await
            .map_err(|e| from_agent_file(e, &path))?;
        Ok(WriteFileResult { path, size })
    }

    pub async fn read_file(
        &self,
        who: &Principal,
        id: SandboxId,
        path: &str,
        user: Option<RunAs>,
    ) -> Result<Vec<u8>, ApiError> {
        let path = sandbox_path(path)?;
        let live = self.usable(who, id).await?;
        let resp = live
            .agent
            .read_file_stream(&path, Some(user.unwrap_or_default().username()))
            .await
            .map_err(|e| from_agent_file(e, &path))?;
        let limit = self.config.max_file_bytes;
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = |size: u64| {
            ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!("{path} is {size} bytes; readFile returns at most {limit}"),
            )
            .with_detail("path", path.clone())
        };
        if let Some(size) = declared
            && size > limit
        {
            return Err(too_large(size));
        }
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(ErrorKind::Unavailable, format!("reading {path}: {e}"))
            })?;
            if let Some(data) = frame.data_ref() {
                out.extend_from_slice(data);
                if out.len() as u64 > limit {
                    return Err(too_large(out.len() as u64));
                }
            }
        }
        Ok(out)
    }

    pub async fn list_dir(
        &self,
        who: &Principal,
        id: SandboxId,
        path: &str,
        user: Option<RunAs>,
    ) -> Result<Vec<DirEntry>, ApiError> {
        let path = sandbox_path(path)?;
        let live = self.usable(who, id).await?;
        let resp: ListDirResponse = live
            .agent
            .unary(
                paths::FS_LIST_DIR,
                &ListDirRequest {
                    path: path.clone(),
                    depth: 1,
                },
                &opts(user),
            )
            .await
            .map_err(|e| from_agent_file(e, &path))?;
        Ok(resp.entries.into_iter().map(dir_entry).collect())
    }

    /// A filesystem call that answers with one entry (stat, makeDir).
    async fn entry_call(
        &self,
        who: &Principal,
        procedure: &str,
        id: SandboxId,
        path: &str,
        user: Option<RunAs>,
    ) -> Result<DirEntry, ApiError> {
        let path = sandbox_path(path)?;
        let live = self.usable(who, id).await?;
        let resp: EntryResponse = live
            .agent
            .unary(procedure, &PathRequest { path: path.clone() }, &opts(user))
            .await
            .map_err(|e| from_agent_file(e, &path))?;
        Ok(dir_entry(resp.entry))
    }

    pub async fn stat(
        &self,
        who: &Principal,
        id: SandboxId,
        path: &str,
        user: Option<RunAs>,
    ) -> Result<DirEntry, ApiError> {
        self.entry_call(who, paths::FS_STAT, id, path, user).await
    }

    pub async fn make_dir(
        &self,
        who: &Principal,
        id: SandboxId,
        path: &str,
        user: Option<RunAs>,
    ) -> Result<DirEntry, ApiError> {
        let result = self
            .entry_call(who, paths::FS_MAKE_DIR, id, path, user)
            .await;
        self.audit(who, "sandbox.v1.makeDir", Some(id.as_str()), &result);
        result
    }

    pub async fn remove(
        &self,
        who: &Principal,
        id: SandboxId,
        path: &str,
        user: Option<RunAs>,
    ) -> Result<(), ApiError> {
        let result = self.remove_checked(who, id, path, user).await;
        self.audit(who, "sandbox.v1.remove", Some(id.as_str()), &result);
        result
    }

    async fn remove_checked(
        &self,
        who: &Principal,
        id: SandboxId,
        path: &str,
        user: Option<RunAs>,
    ) -> Result<(), ApiError> {
        let path = sandbox_path(path)?;
        if path == "/" {
            return Err(ApiError::invalid_params(
                "refusing to remove / (the whole sandbox root)",
            ));
        }
        let live = self.usable(who, id).await?;
        live.agent
            .unary::<_, Empty>(
                paths::FS_REMOVE,
                &PathRequest { path: path.clone() },
                &opts(user),
            )
            .await
            .map_err(|e| from_agent_file(e, &path))?;
        Ok(())
    }

    /// Checks the agent of a running sandbox answers.
    pub async fn ping(&self, who: &Principal, id: SandboxId) -> Result<(), ApiError> {
        self.usable(who, id)
            .await?
            .agent
            .health()
            .await
            .map_err(from_agent)
    }
}
