//! The wire protocol shared by the server and every client: newline-delimited JSON, one
//! message per line, on the FIFO (procman 0.12's `run` and `shutdown`) and the socket
//! (which adds requests with replies). [`ProcessName`] and [`ProcessState`] are the same
//! types the supervisor works with.

mod name;
mod state;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use name::{InvalidName, MAX_NAME, ProcessName, SUPERVISOR_NAME};
pub use state::{Exit, ProcessState, ProcessStatus, StopReason, Timestamp, signal_name};

/// Longest accepted request line, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// Longest reply line the server sends, newline excluded: an output line (at most
/// [`MAX_LINE`] bytes of text) fits even when every byte needs a JSON escape, and the
/// tail answering a `logs` request is split into `logs` replies of at most this size.
pub const MAX_REPLY: usize = 1024 * 1024;

/// Lines a `logs` request asks for when it does not say.
pub const DEFAULT_LOG_LINES: usize = 100;

/// Protocol version recorded in the discovery file; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 2;

/// The `type` values a request may carry.
pub const KNOWN_TYPES: &[&str] = &[
    "run",
    "shutdown",
    "status",
    "ready",
    "stop_process",
    "restart_process",
    "subscribe",
    "logs",
];

/// One request from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Start a new process (`procman start`).
    Run(RunRequest),
    /// Shut the server down gracefully (`procman stop`).
    Shutdown {
        /// Who asked, for the log.
        #[serde(default)]
        user: Option<String>,
        /// Why, for the log.
        #[serde(default)]
        message: Option<String>,
    },
    /// Ask for the process table; socket only, answered with [`Reply::Status`].
    Status,
    /// Answered (with [`Reply::Ok`]) once every autostart long-running process runs and no
    /// process waits for a dependency; socket only. Lets `attach` wait without polling.
    Ready,
    /// Stop one process by name; socket only.
    StopProcess {
        /// The process name.
        name: String,
    },
    /// Restart one process by name; socket only.
    RestartProcess {
        /// The process name.
        name: String,
    },
    /// Follow the process table: answered with a [`Reply::Status`] snapshot, then one
    /// [`Reply::Event`] per state change, for as long as the connection stays open;
    /// socket only.
    Subscribe {
        /// Also stream every output line from now on, as [`Reply::Log`] (and
        /// [`Reply::LogGap`] where this client fell behind).
        #[serde(
            default,
            deserialize_with = "null_as_default",
            skip_serializing_if = "is_false"
        )]
        logs: bool,
    },
    /// The kept output tail: answered with [`Reply::Logs`] (oldest first, possibly split
    /// into several replies), then, with `follow`, one [`Reply::Log`] per new line until
    /// the connection closes; socket only.
    Logs(LogsRequest),
}

/// A `logs` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// Processes, group names (every instance) or `procman` (the supervisor's lines);
    /// empty for everyone. Not [`ProcessName`]s, since `procman` is allowed here.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names: Vec<String>,
    /// At most this many of the newest kept lines, of all the named processes together.
    #[serde(default = "default_log_lines")]
    pub lines: usize,
    /// No line read before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Keep streaming new lines after the tail.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub follow: bool,
}

fn default_log_lines() -> usize {
    DEFAULT_LOG_LINES
}

/// One output line on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Whose line it is: a process, or `procman` for the supervisor's own lines.
    pub name: String,
    /// The line's position in the server's output, across all processes: a line with a
    /// larger `seq` came later. Lets a client join a kept tail and a live stream exactly;
    /// absent from servers before it was added, and from lines a client makes up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When the server read it.
    pub time: Timestamp,
    /// The line without its line ending, escape sequences included; bytes that are not
    /// UTF-8 are replaced by U+FFFD.
    pub line: String,
}

/// A `run` message. Unknown fields are ignored, as procman 0.12 does, so that newer
/// clients can add optional fields without breaking older servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Process name; a repeated name is deduplicated by the supervisor (`name.1`, …).
    pub name: ProcessName,
    /// The command line.
    pub run: String,
    /// Extra environment, merged over the server's.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// Dependencies in the config file's forms; validated by the supervisor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends: Option<Value>,
    /// One-shot task rather than a long-running process.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub once: bool,
}

/// The server's answer to a socket request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The request was accepted.
    Ok {
        /// What was done.
        message: String,
    },
    /// A `run` or `restart_process` request started (or queued) a process.
    Started {
        /// The process under its final, possibly deduplicated, name, and its state.
        process: ProcessStatus,
    },
    /// The process table.
    Status {
        /// The server's pid.
        pid: u32,
        /// The config it serves.
        config: String,
        /// One entry per process.
        processes: Vec<ProcessStatus>,
    },
    /// A process's new state, streamed to subscribers.
    Event {
        /// The process's row after the change.
        process: ProcessStatus,
    },
    /// One output line, streamed to a `subscribe` with `logs` or a `logs` with `follow`.
    Log(LogLine),
    /// The kept tail answering a `logs` request, oldest first. A tail larger than
    /// [`MAX_REPLY`] comes as several replies; all but the last have `more`.
    Logs {
        /// The lines, oldest first.
        lines: Vec<LogLine>,
        /// Another `logs` reply follows with the rest of the tail.
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
    },
    /// This client read too slowly and `missed` output lines were skipped here.
    LogGap {
        /// Lines skipped (of every process; fewer of the named ones may be among them).
        missed: u64,
    },
    /// The request was refused or failed.
    Error {
        /// Why, in one sentence.
        message: String,
    },
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Parses one line (a trailing `\n` or `\r\n` is allowed). Errors are one sentence saying
/// what is wrong with the line.
pub fn parse_line(line: &[u8]) -> Result<Message, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(format!(
            "message is {} bytes; messages are limited to {MAX_LINE} bytes per line",
            line.len()
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "message is not UTF-8 text (invalid byte at offset {}); expected one JSON object per line",
            e.valid_up_to()
        )
    })?;
    if text.trim().is_empty() {
        return Err("message is empty; expected one JSON object per line".into());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("message is not valid JSON: {e}"))?;
    let Value::Object(object) = &value else {
        return Err(format!(
            "message is a JSON {}, not an object; expected {{\"type\": ...}}",
            kind(&value)
        ));
    };
    let known = KNOWN_TYPES.join(", ");
    let kind = match object.get("type") {
        None => {
            return Err(format!(
                "message has no `type` field; expected one of: {known}"
            ));
        }
        Some(Value::String(t)) => t.clone(),
        Some(other) => {
            return Err(format!(
                "message `type` is a JSON {}, not a string; expected one of: {known}",
                kind(other)
            ));
        }
    };
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        return Err(format!(
            "unknown message type {kind:?}; expected one of: {known}"
        ));
    }
    let message: Message =
        serde_json::from_value(value).map_err(|e| format!("invalid `{kind}` message: {e}"))?;
    validate(&message)?;
    Ok(message)
}

fn validate(message: &Message) -> Result<(), String> {
    let check_name = |kind: &str, name: &str| {
        if name.trim().is_empty() {
            Err(format!("`{kind}` message has an empty `name`"))
        } else if name.chars().any(char::is_control) {
            Err(format!(
                "`{kind}` message has control characters in `name` {name:?}"
            ))
        } else {
            Ok(())
        }
    };
    match message {
        Message::Run(run) => {
            if run.run.trim().is_empty() {
                return Err(format!(
                    "`run` message for {:?} has an empty `run` command",
                    run.name
                ));
            }
            // No environment can hold such a key: `A=B` would reach the process as `A`.
            if let Some(key) = run
                .env
                .keys()
                .find(|key| key.is_empty() || key.contains(['=', '\0']))
            {
                return Err(format!(
                    "`run` message for {:?} has the `env` key {key:?}: a key is never empty and holds no `=` or NUL",
                    run.name
                ));
            }
            Ok(())
        }
        Message::StopProcess { name } => check_name("stop_process", name),
        Message::RestartProcess { name } => check_name("restart_process", name),
        Message::Logs(logs) => logs
            .names
            .iter()
            .try_for_each(|name| check_name("logs", name)),
        Message::Shutdown { .. } | Message::Status | Message::Ready | Message::Subscribe { .. } => {
            Ok(())
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `bytes` is syntactically one JSON value (used to find where a glued line's
/// real message starts).
pub(crate) fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

fn to_line<T: Serialize>(value: &T) -> String {
    // Serializing these plain data types cannot fail; fall back to an error object anyway.
    let mut line = serde_json::to_string(value)
        .unwrap_or_else(|e| format!(r#"{{"type":"error","message":"cannot encode: {e}"}}"#));
    line.push('\n');
    line
}

/// Encodes a request as one line with a trailing `\n`.
pub fn encode(message: &Message) -> String {
    to_line(message)
}

/// Encodes a reply as one line with a trailing `\n`.
pub fn encode_reply(reply: &Reply) -> String {
    to_line(reply)
}

/// Parses one reply line.
pub fn parse_reply(line: &[u8]) -> Result<Reply, String> {
    serde_json::from_slice(line).map_err(|e| format!("not a valid reply: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_line(line.as_bytes()).unwrap_err()
    }

    #[test]
    fn run_full_and_minimal() {
        let full = r#"{"type":"run","name":"redis-server","run":"redis-server --port 6380","env":{"K":"V"},"depends":[{"url":"http://localhost:8080/health","code":200}],"once":true,"future":1}"#;
        let Message::Run(run) = parse_line(full.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(run.name, "redis-server");
        assert_eq!(run.env.get("K").map(String::as_str), Some("V"));
        assert!(run.once);
        assert!(run.depends.unwrap().is_array());

        let min = parse_line(b"{\"type\":\"run\",\"name\":\"a\",\"run\":\"true\",\"env\":null}\n")
            .unwrap();
        assert_eq!(
            min,
            Message::Run(RunRequest {
                name: ProcessName::new("a").unwrap(),
                run: "true".into(),
                env: BTreeMap::new(),
                depends: None,
                once: false
            })
        );
        assert_eq!(parse_line(encode(&min).as_bytes()).unwrap(), min);
    }

    #[test]
    fn other_forms_round_trip() {
        let shutdown =
            parse_line(br#"{"type":"shutdown","user":"alice","message":"bye"}"#).unwrap();
        assert_eq!(
            shutdown,
            Message::Shutdown {
                user: Some("alice".into()),
                message: Some("bye".into())
            }
        );
        assert_eq!(
            parse_line(br#"{"type":"shutdown"}"#).unwrap(),
            Message::Shutdown {
                user: None,
                message: None
            }
        );
        for m in [
            Message::Status,
            Message::Subscribe { logs: false },
            Message::Subscribe { logs: true },
            Message::Logs(LogsRequest {
                names: vec!["web".into(), "procman".into()],
                lines: 5,
                since: Some(Timestamp(1_700_000_000_000)),
                follow: true,
            }),
            Message::StopProcess { name: "web".into() },
            Message::RestartProcess { name: "web".into() },
            shutdown,
        ] {
            let line = encode(&m);
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(parse_line(line.as_bytes()).unwrap(), m);
        }
        let reply = Reply::Status {
            pid: 1,
            config: "/x".into(),
            processes: vec![ProcessStatus {
                name: ProcessName::new("a").unwrap(),
                state: ProcessState::Running {
                    pid: 2,
                    since: Timestamp(1),
                },
                restarts: 0,
                group: None,
            }],
        };
        assert_eq!(parse_reply(encode_reply(&reply).as_bytes()).unwrap(), reply);
    }

    #[test]
    fn output_stream_defaults_and_wire_shapes() {
        assert_eq!(
            parse_line(br#"{"type":"subscribe"}"#).unwrap(),
            Message::Subscribe { logs: false }
        );
        assert_eq!(
            encode(&Message::Subscribe { logs: false }),
            "{\"type\":\"subscribe\"}\n"
        );
        assert_eq!(
            parse_line(br#"{"type":"logs"}"#).unwrap(),
            Message::Logs(LogsRequest {
                names: Vec::new(),
                lines: DEFAULT_LOG_LINES,
                since: None,
                follow: false
            })
        );
        let e = err(r#"{"type":"logs","names":["a\u001b[2J"]}"#);
        assert!(e.contains("control characters"), "{e}");
        let e = err(r#"{"type":"logs","lines":-1}"#);
        assert!(e.contains("invalid `logs` message"), "{e}");
        let log = Reply::Log(LogLine {
            name: "web".into(),
            seq: Some(7),
            time: Timestamp(1_764_370_000_512),
            line: "GET / 200".into(),
        });
        assert_eq!(
            encode_reply(&log),
            "{\"type\":\"log\",\"name\":\"web\",\"seq\":7,\"time\":1764370000512,\"line\":\"GET / 200\"}\n"
        );
        let gap = Reply::LogGap { missed: 5 };
        assert_eq!(encode_reply(&gap), "{\"type\":\"log_gap\",\"missed\":5}\n");
        let logs = Reply::Logs {
            lines: Vec::new(),
            more: false,
        };
        assert_eq!(encode_reply(&logs), "{\"type\":\"logs\",\"lines\":[]}\n");
        for reply in [log, gap, logs] {
            assert_eq!(parse_reply(encode_reply(&reply).as_bytes()).unwrap(), reply);
        }
    }

    #[test]
    fn bad_inputs_have_clear_errors() {
        let e = err(r#"{"type":"run","#);
        assert!(e.contains("not valid JSON") && e.contains("column"), "{e}");
        let e = err(r#"{"type":"run","run":"x"}"#);
        assert!(e.contains("missing field `name`"), "{e}");
        let e = err(r#"{"type":"run","name":"x"}"#);
        assert!(e.contains("missing field `run`"), "{e}");
        let e = err(r#"{"type":"run","name":"x","run":"  "}"#);
        assert!(e.contains("empty `run`"), "{e}");
        let e = err(r#"{"type":"run","name":"","run":"true"}"#);
        assert!(e.contains("name must not be empty"), "{e}");
        let e = err(r#"{"type":"run","name":"procman","run":"true"}"#);
        assert!(e.contains("reserved"), "{e}");
        let e = err(r#"{"type":"launch"}"#);
        assert!(
            e.contains("unknown message type \"launch\"") && e.contains("shutdown"),
            "{e}"
        );
        let e = err(r#"{"name":"x"}"#);
        assert!(e.contains("no `type`"), "{e}");
        let e = err("[1,2]");
        assert!(e.contains("array"), "{e}");
        let e = parse_line(b"\xff\xfe\x00garbage\n").unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
        let long = format!(
            r#"{{"type":"run","name":"x","run":"{}"}}"#,
            "a".repeat(70 * 1024)
        );
        let e = err(&long);
        assert!(e.contains("limited to 65536"), "{e}");
        // Found by fuzzing: MAX_LINE + 1 bytes without a line end were accepted.
        let mut over = br#"{"type":"status"}"#.to_vec();
        over.resize(MAX_LINE, b' ');
        assert_eq!(parse_line(&over), Ok(Message::Status));
        over.extend_from_slice(b"\r\n");
        assert_eq!(parse_line(&over), Ok(Message::Status));
        over.insert(0, b' ');
        let e = parse_line(&over).unwrap_err();
        assert!(e.contains("message is 65537 bytes"), "{e}");
        over.truncate(MAX_LINE + 1);
        assert!(parse_line(&over).is_err());
        let e = err(r#"{"type":"run","name":"x","run":"y","env":{"A":1}}"#);
        assert!(e.contains("invalid `run` message"), "{e}");
        for key in ["", "PATH=/tmp", "A\\u0000B"] {
            let e = err(&format!(
                r#"{{"type":"run","name":"x","run":"y","env":{{"{key}":"v"}}}}"#
            ));
            assert!(e.contains("has the `env` key"), "{key}: {e}");
        }
    }
}
