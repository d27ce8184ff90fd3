//! `hearthctl events`: the persisted event log, or its live stream with `--follow`.

use std::io::Write;
use std::time::Duration;

use hearth::client::{ApiPath, Client, ClientError, Method, SseReader};
use hearth_proto::api::Event;

use crate::output::utc;
use crate::{usage, Failure, Out};

/// Events fetched per page of the log.
const PAGE: usize = 1000;

/// `hearthctl events [--follow] [--since N]`.
pub(crate) fn run(c: &Client, json: bool, follow: bool, since: u64) -> Out {
    if follow {
        follow_stream(c, json, since)
    } else {
        list(c, json, since)
    }
}

/// Prints the log after `since`, page by page.
fn list(c: &Client, json: bool, mut since: u64) -> Out {
    loop {
        let page: Vec<Event> = c.get(
            ApiPath::new("/v1/events")
                .query("since", since)
                .query("limit", PAGE),
        )?;
        for e in &page {
            print_event(json, e);
        }
        match page.last() {
            Some(last) if page.len() == PAGE => since = last.seq,
            _ => return Ok(()),
        }
    }
}

/// Follows the stream, reconnecting when it ends (hearthd drops clients that fall far behind
/// and ends streams when it stops) and resuming after the last event printed. If hearthd is
/// gone the reconnect fails (exit 3); a stream that keeps ending at once is given up on.
fn follow_stream(c: &Client, json: bool, since: u64) -> Out {
    let mut last = since;
    let mut empty_streams = 0;
    loop {
        let path = ApiPath::new("/v1/events/stream").query("since", last);
        let stream = match c.stream(Method::GET, path, &[], None) {
            Ok(stream) => stream,
            Err(e) if e.is_unreachable() || empty_streams >= 4 => return Err(e.into()),
            // Caught hearthd mid-shutdown or a dropped connection: try again.
            Err(_) => {
                empty_streams += 1;
                std::thread::sleep(Duration::from_millis(200 * empty_streams));
                continue;
            }
        };
        if !(200..300).contains(&stream.status) {
            stream.into_response()?.ok()?;
            return Err(usage("unexpected answer".into()));
        }
        let before = last;
        for frame in SseReader::new(stream.body) {
            let Ok(frame) = frame else { break };
            let e: Event = serde_json::from_str(&frame.data).map_err(ClientError::Decode)?;
            print_event(json, &e);
            last = e.seq;
        }
        empty_streams = if last == before { empty_streams + 1 } else { 0 };
        if empty_streams >= 5 {
            return Err(Failure {
                code: 4,
                message: "The event stream keeps ending (see hearthd's log)".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(200 * empty_streams));
    }
}

/// One event: a JSON line, or a table row.
fn print_event(json: bool, e: &Event) {
    if json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
    } else {
        println!(
            "{:>6}  {}  {:<20} {:<9} {:<17} {}",
            e.seq,
            utc(e.at_ms),
            e.vm,
            e.state,
            serde_json::to_value(e.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            e.detail.as_deref().unwrap_or("")
        );
    }
    let _ = std::io::stdout().flush();
}
