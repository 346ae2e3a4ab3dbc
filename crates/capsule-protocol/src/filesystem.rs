//! Messages of the `filesystem.Filesystem` service (proto3 JSON mapping).

use serde::{Deserialize, Serialize};

use crate::process::{KeepAlive, proto_enum};
use crate::serde_helpers::{i64_string, is_zero_i64, is_zero_u32};

proto_enum! {
    /// What an entry is. Symlinks report the type of what they point at
    /// (or `FILE` when dangling) and carry `symlinkTarget`.
    FileType {
        Unspecified = 0 => "FILE_TYPE_UNSPECIFIED",
        File = 1 => "FILE_TYPE_FILE",
        Directory = 2 => "FILE_TYPE_DIRECTORY",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub file_type: FileType,
    pub path: String,
    #[serde(default, with = "i64_string", skip_serializing_if = "is_zero_i64")]
    pub size: i64,
    /// The full `st_mode` (type and permission bits).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
    /// `ls -l` style, e.g. `-rw-r--r--`.
    #[serde(default)]
    pub permissions: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub group: String,
    /// RFC 3339 with nanoseconds.
    #[serde(
        default,
        alias = "modified_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub modified_time: Option<String>,
    #[serde(
        default,
        alias = "symlink_target",
        skip_serializing_if = "Option::is_none"
    )]
    pub symlink_target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRequest {
    pub path: String,
}

pub type StatRequest = PathRequest;
pub type MakeDirRequest = PathRequest;
pub type RemoveRequest = PathRequest;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryResponse {
    pub entry: EntryInfo,
}

pub type StatResponse = EntryResponse;
pub type MakeDirResponse = EntryResponse;
pub type MoveResponse = EntryResponse;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequest {
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListDirRequest {
    pub path: String,
    /// How many levels to descend; 0 and 1 both mean the directory itself.
    #[serde(default)]
    pub depth: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListDirResponse {
    #[serde(default)]
    pub entries: Vec<EntryInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchDirRequest {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
}

proto_enum! {
    EventType {
        Unspecified = 0 => "EVENT_TYPE_UNSPECIFIED",
        Create = 1 => "EVENT_TYPE_CREATE",
        Write = 2 => "EVENT_TYPE_WRITE",
        Remove = 3 => "EVENT_TYPE_REMOVE",
        Rename = 4 => "EVENT_TYPE_RENAME",
        Chmod = 5 => "EVENT_TYPE_CHMOD",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemEvent {
    /// The path of the entry relative to the watched directory.
    pub name: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStart {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WatchDirResponse {
    Start(WatchStart),
    Filesystem(FilesystemEvent),
    Keepalive(KeepAlive),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateWatcherRequest {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWatcherResponse {
    #[serde(alias = "watcher_id")]
    pub watcher_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatcherRequest {
    #[serde(alias = "watcher_id")]
    pub watcher_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetWatcherEventsResponse {
    #[serde(default)]
    pub events: Vec<FilesystemEvent>,
}

/// One element of the answer to `POST /files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn entry_info_uses_proto_json_names() {
        let e = EntryInfo {
            name: "a.txt".into(),
            file_type: FileType::File,
            path: "/workspace/a.txt".into(),
            size: 5,
            mode: 0o100644,
            permissions: "-rw-r--r--".into(),
            owner: "user".into(),
            group: "user".into(),
            modified_time: Some("2024-01-19T10:00:00Z".into()),
            symlink_target: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "FILE_TYPE_FILE");
        assert_eq!(v["size"], "5");
        assert_eq!(v["modifiedTime"], "2024-01-19T10:00:00Z");
        let back: EntryInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let loose: EntryInfo = serde_json::from_value(
            json!({"name":"d","type":2,"path":"/d","size":7,"symlink_target":"/x"}),
        )
        .unwrap();
        assert_eq!(loose.file_type, FileType::Directory);
        assert_eq!(loose.size, 7);
        assert_eq!(loose.symlink_target.as_deref(), Some("/x"));
    }

    #[test]
    fn watch_events() {
        let ev = WatchDirResponse::Filesystem(FilesystemEvent {
            name: "x".into(),
            event_type: EventType::Create,
        });
        assert_eq!(
            serde_json::to_value(&ev).unwrap(),
            json!({"filesystem":{"name":"x","type":"EVENT_TYPE_CREATE"}})
        );
    }
}
