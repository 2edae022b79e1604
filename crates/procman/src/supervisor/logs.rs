//! The server side of output streaming: `subscribe` with `logs`, and `logs` requests.
//!
//! Lines come from [`Output`]'s bounded tail and live feed. A follower never holds the
//! output back: each has a small buffer ([`crate::control::FOLLOW_BUFFER`]) in front of
//! its connection, behind that the feed's own bounded ring, and a client that falls
//! further behind is told how many lines it missed ([`Reply::LogGap`]).

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use crate::config::suggest;
use crate::control::ReplyStream;
use crate::output::{self, Output};
use crate::protocol::{LogLine, LogsRequest, MAX_REPLY, ProcessStatus, Reply, SUPERVISOR_NAME};

/// Which names a stream carries; `None` for all.
type Filter = Option<Arc<HashSet<String>>>;

/// Streams every output line from now on to a subscriber (its `logs: true`), for as long
/// as its stream lasts.
pub(super) fn subscribe(output: &Output, stream: &ReplyStream) {
    if let Some(feed) = stream.follow() {
        tokio::spawn(forward(output.subscribe(), feed, None, 0));
    }
}

/// Answers a `logs` request: the kept tail of the named processes (groups stand for their
/// instances), then, with `follow`, their new lines until the client leaves or the output
/// ends. An unknown name is answered with an error naming it.
pub(super) fn answer(
    output: &Output,
    request: &LogsRequest,
    table: &[ProcessStatus],
    stream: ReplyStream,
) {
    let names = match resolve(&request.names, table) {
        Ok(names) => names,
        Err(message) => {
            stream.send(Reply::Error { message });
            return;
        }
    };
    // Subscribed before the tail is taken, so that no line falls in between.
    let live = request.follow.then(|| output.subscribe());
    let selected: Vec<&str> = names.iter().map(String::as_str).collect();
    let since = request
        .since
        .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.0));
    let tail = output.tail(&selected, request.lines, since);
    let last = tail.last().map(|l| l.seq);
    for reply in chunks(tail.iter().map(wire).collect()) {
        if !stream.send(reply) {
            return;
        }
    }
    let Some(live) = live else { return };
    let Some(feed) = stream.follow() else { return };
    let filter = (!names.is_empty()).then(|| Arc::new(names.into_iter().collect()));
    let skip_to = last.map_or(0, |seq| seq + 1);
    tokio::spawn(async move {
        // The stream lasts as long as this task: it is the only holder left.
        let _stream = stream;
        forward(live, feed, filter, skip_to).await;
    });
}

/// The names a request selects: empty for everyone, else each name or group's instances.
fn resolve(names: &[String], table: &[ProcessStatus]) -> Result<Vec<String>, String> {
    let mut selected = Vec::new();
    for name in names {
        if name == SUPERVISOR_NAME {
            selected.push(name.clone());
            continue;
        }
        let members: Vec<String> = table
            .iter()
            .filter(|p| *p.name == **name || p.group.as_deref() == Some(name.as_str()))
            .map(|p| p.name.to_string())
            .collect();
        if members.is_empty() {
            return Err(unknown(name, table));
        }
        for member in members {
            if !selected.contains(&member) {
                selected.push(member);
            }
        }
    }
    Ok(selected)
}

/// `no process named "x"; did you mean `y`?; known: a, b` (groups count as names).
fn unknown(name: &str, table: &[ProcessStatus]) -> String {
    let mut known: Vec<&str> = table.iter().map(|p| p.name.as_str()).collect();
    for group in table.iter().filter_map(|p| p.group.as_deref()) {
        if !known.contains(&group) {
            known.push(group);
        }
    }
    known.push(SUPERVISOR_NAME);
    format!(
        "no process named {name:?}{}; known: {}",
        suggest(name, known.iter().copied()),
        known.join(", ")
    )
}

/// A line as the protocol sends it.
fn wire(line: &output::LogLine) -> LogLine {
    LogLine {
        name: line.name.to_string(),
        seq: Some(line.seq),
        time: line.time.into(),
        line: String::from_utf8_lossy(&line.text).into_owned(),
    }
}

/// The tail as `logs` replies of at most [`MAX_REPLY`] bytes each (at least one reply).
fn chunks(lines: Vec<LogLine>) -> Vec<Reply> {
    // `{"type":"logs","lines":[` … `],"more":true}` and a comma per line.
    const FRAME: usize = 64;
    let mut replies = Vec::new();
    let mut current = Vec::new();
    let mut size = FRAME;
    for line in lines {
        let len = serde_json::to_string(&line).map_or(MAX_REPLY, |s| s.len()) + 1;
        if !current.is_empty() && size + len > MAX_REPLY {
            replies.push(std::mem::take(&mut current));
            size = FRAME;
        }
        size += len;
        current.push(line);
    }
    replies.push(current);
    let last = replies.len() - 1;
    replies
        .into_iter()
        .enumerate()
        .map(|(i, lines)| Reply::Logs {
            lines,
            more: i < last,
        })
        .collect()
}

/// Sends the lines of `filter` numbered `skip_to` or later to `feed`, and a gap notice
/// where this follower fell behind, until the client or the output is gone.
async fn forward(
    mut live: broadcast::Receiver<output::LogLine>,
    feed: mpsc::Sender<Reply>,
    filter: Filter,
    skip_to: u64,
) {
    loop {
        let reply = tokio::select! {
            received = live.recv() => match received {
                Ok(line) if line.seq < skip_to => continue,
                Ok(line) if filter.as_ref().is_some_and(|f| !f.contains(&*line.name)) => continue,
                Ok(line) => Reply::Log(wire(&line)),
                Err(RecvError::Lagged(missed)) => Reply::LogGap { missed },
                Err(RecvError::Closed) => return,
            },
            () = feed.closed() => return,
        };
        if feed.send(reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ProcessName, ProcessState, Timestamp};

    fn row(name: &str, group: Option<&str>) -> ProcessStatus {
        ProcessStatus {
            name: ProcessName::new(name).unwrap(),
            state: ProcessState::Dormant,
            restarts: 0,
            group: group.map(|g| ProcessName::new(g).unwrap()),
        }
    }

    #[test]
    fn names_groups_and_unknown_names() {
        let table = [
            row("web", None),
            row("worker-0", Some("worker")),
            row("worker-1", Some("worker")),
        ];
        assert_eq!(resolve(&[], &table).unwrap(), Vec::<String>::new());
        assert_eq!(
            resolve(
                &["worker".into(), "procman".into(), "worker-0".into()],
                &table
            )
            .unwrap(),
            ["worker-0", "worker-1", "procman"]
        );
        assert_eq!(resolve(&["worker-1".into()], &table).unwrap(), ["worker-1"]);
        let e = resolve(&["wbe".into()], &table).unwrap_err();
        assert_eq!(
            e,
            "no process named \"wbe\"; did you mean `web`?; known: web, worker-0, worker-1, worker, procman"
        );
    }

    #[test]
    fn large_tails_are_split_into_replies_that_fit() {
        let line = LogLine {
            name: "web".into(),
            seq: Some(1),
            time: Timestamp(1),
            line: "\u{1}".repeat(60 * 1024),
        };
        let replies = chunks(vec![line; 10]);
        assert!(replies.len() > 1);
        let mut count = 0;
        for (i, reply) in replies.iter().enumerate() {
            assert!(crate::protocol::encode_reply(reply).len() <= MAX_REPLY);
            let Reply::Logs { lines, more } = reply else {
                panic!("{reply:?}")
            };
            assert_eq!(*more, i + 1 < replies.len());
            count += lines.len();
        }
        assert_eq!(count, 10);
        assert_eq!(
            chunks(Vec::new()),
            [Reply::Logs {
                lines: Vec::new(),
                more: false
            }]
        );
    }
}
