//! Messages of the `process.Process` service (proto3 JSON mapping).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::serde_helpers::{b64, is_false};

/// Declares a proto enum that serializes by name and parses by name or number.
macro_rules! proto_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $num:literal => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            #[default]
            $($variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn number(self) -> i32 {
                match self { $($name::$variant => $num),+ }
            }
            pub fn from_number(n: i64) -> Option<Self> {
                match n { $($num => Some($name::$variant),)+ _ => None }
            }
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = serde_json::Value::deserialize(d)?;
                let parsed = match &v {
                    serde_json::Value::String(s) => $name::from_name(s),
                    serde_json::Value::Number(n) => n.as_i64().and_then($name::from_number),
                    serde_json::Value::Null => Some($name::default()),
                    _ => None,
                };
                parsed.ok_or_else(|| serde::de::Error::custom(format!(
                    "{} is not a valid {}", v, stringify!($name)
                )))
            }
        }
    };
}
pub(crate) use proto_enum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    pub cols: u32,
    pub rows: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pty {
    pub size: PtySize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// Picks a process by pid or by the tag it was started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessSelector {
    Pid(u32),
    Tag(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub config: ProcessConfig,
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    #[serde(default)]
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    pub process: ProcessConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<Pty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Keep stdin open for SendInput/StreamInput; otherwise it reads as empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    pub process: ProcessSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<Pty>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartEvent {
    pub pid: u32,
}

/// A chunk of output from one of the process's streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DataEvent {
    Stdout(#[serde(with = "b64")] Vec<u8>),
    Stderr(#[serde(with = "b64")] Vec<u8>),
    Pty(#[serde(with = "b64")] Vec<u8>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndEvent {
    #[serde(rename = "exitCode", alias = "exit_code", default)]
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub exited: bool,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl EndEvent {
    /// The signal number when `status` reports one (`"signal: killed"` style
    /// or `"signal: 9"`).
    pub fn signal(&self) -> Option<i32> {
        let rest = self.status.strip_prefix("signal: ")?;
        rest.parse()
            .ok()
            .or_else(|| signal_number(rest.trim_end_matches(" (core dumped)")))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAlive {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessEvent {
    Start(StartEvent),
    Data(DataEvent),
    End(EndEvent),
    Keepalive(KeepAlive),
}

/// Each message of the Start and Connect streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMessage {
    pub event: ProcessEvent,
}

pub type StartResponse = EventMessage;
pub type ConnectResponse = EventMessage;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessInput {
    Stdin(#[serde(with = "b64")] Vec<u8>),
    Pty(#[serde(with = "b64")] Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendInputRequest {
    pub process: ProcessSelector,
    pub input: ProcessInput,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInputStart {
    pub process: ProcessSelector,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInputData {
    pub input: ProcessInput,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamInputEvent {
    Start(StreamInputStart),
    Data(StreamInputData),
    Keepalive(KeepAlive),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInputRequest {
    pub event: StreamInputEvent,
}

proto_enum! {
    /// The signals SendSignal can deliver.
    Signal {
        Unspecified = 0 => "SIGNAL_UNSPECIFIED",
        Sigterm = 15 => "SIGNAL_SIGTERM",
        Sigkill = 9 => "SIGNAL_SIGKILL",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendSignalRequest {
    pub process: ProcessSelector,
    #[serde(default)]
    pub signal: Signal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub process: ProcessSelector,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseStdinRequest {
    pub process: ProcessSelector,
}

/// Maps the short signal names used in `status` ("killed", "terminated") to numbers.
pub fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "hangup" => 1,
        "interrupt" => 2,
        "quit" => 3,
        "illegal instruction" => 4,
        "trace/breakpoint trap" => 5,
        "aborted" => 6,
        "bus error" => 7,
        "floating point exception" => 8,
        "killed" => 9,
        "user defined signal 1" => 10,
        "segmentation fault" => 11,
        "user defined signal 2" => 12,
        "broken pipe" => 13,
        "alarm clock" => 14,
        "terminated" => 15,
        _ => return None,
    })
}

/// The short description of a signal used in `status`, as Go's os package words it.
pub fn signal_name(signal: i32) -> String {
    let known = [
        (1, "hangup"),
        (2, "interrupt"),
        (3, "quit"),
        (4, "illegal instruction"),
        (5, "trace/breakpoint trap"),
        (6, "aborted"),
        (7, "bus error"),
        (8, "floating point exception"),
        (9, "killed"),
        (10, "user defined signal 1"),
        (11, "segmentation fault"),
        (12, "user defined signal 2"),
        (13, "broken pipe"),
        (14, "alarm clock"),
        (15, "terminated"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == signal)
        .map(|(_, name)| (*name).to_owned())
        .unwrap_or_else(|| signal.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn start_request_matches_what_the_e2b_sdk_sends() {
        let req: StartRequest = serde_json::from_value(json!({
            "process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo hi"], "envs": {}, "cwd": "/home/user"},
            "stdin": false
        }))
        .unwrap();
        assert_eq!(req.process.cmd, "/bin/bash");
        assert_eq!(req.process.args, ["-l", "-c", "echo hi"]);
        assert_eq!(req.stdin, Some(false));
    }

    #[test]
    fn events_serialize_as_oneofs() {
        let start = EventMessage {
            event: ProcessEvent::Start(StartEvent { pid: 42 }),
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            json!({"event":{"start":{"pid":42}}})
        );
        let data = EventMessage {
            event: ProcessEvent::Data(DataEvent::Stdout(b"hi\n".to_vec())),
        };
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            json!({"event":{"data":{"stdout":"aGkK"}}})
        );
        let end = EventMessage {
            event: ProcessEvent::End(EndEvent {
                exit_code: 3,
                exited: true,
                status: "exit status 3".into(),
                error: None,
            }),
        };
        let v = serde_json::to_value(&end).unwrap();
        assert_eq!(
            v,
            json!({"event":{"end":{"exitCode":3,"exited":true,"status":"exit status 3"}}})
        );
        let back: EventMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back, end);
    }

    #[test]
    fn selectors_signals_and_input() {
        let req: SendSignalRequest =
            serde_json::from_value(json!({"process":{"pid":7},"signal":"SIGNAL_SIGKILL"})).unwrap();
        assert_eq!(req.process, ProcessSelector::Pid(7));
        assert_eq!(req.signal, Signal::Sigkill);
        let req: SendSignalRequest =
            serde_json::from_value(json!({"process":{"tag":"srv"},"signal":15})).unwrap();
        assert_eq!(req.signal, Signal::Sigterm);
        assert!(
            serde_json::from_value::<SendSignalRequest>(
                json!({"process":{"pid":1},"signal":"SIGHUP"})
            )
            .is_err()
        );
        let input: SendInputRequest =
            serde_json::from_value(json!({"process":{"pid":7},"input":{"pty":"bHMK"}})).unwrap();
        assert_eq!(input.input, ProcessInput::Pty(b"ls\n".to_vec()));
    }

    #[test]
    fn end_event_signal_parsing() {
        let end = EndEvent {
            status: "signal: killed".into(),
            ..Default::default()
        };
        assert_eq!(end.signal(), Some(9));
        let end = EndEvent {
            status: "exit status 1".into(),
            ..Default::default()
        };
        assert_eq!(end.signal(), None);
    }
}
