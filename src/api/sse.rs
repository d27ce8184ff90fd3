//! The event stream as server-sent events: first the persisted events after the resume point
//! (read from the supervisor page by page), then live ones, each framed with `id: <seq>` so a
//! client resumes with `Last-Event-ID`. A comment line every [`KEEPALIVE`] keeps idle
//! connections open through proxies.
//!
//! Ordering without gaps or repeats: the stream subscribes *before* it reads the backlog (both
//! messages go through the supervisor's mailbox in order), buffers live events meanwhile, and
//! drops any event whose `seq` it has already sent. A client too slow to drain
//! [`LIVE_BUFFER`] live events is disconnected; it resumes from its last id. Streams end when
//! the server stops ([`StreamShutdown`]), so they do not hold up a shutdown.

use std::collections::VecDeque;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler};
use actix_web::web::Bytes;
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use hearth_actors::supervisor::{EventPublished, EventsSince, Subscribe};
use hearth_proto::api::Event;

use super::{ApiError, SupervisorPorts};

/// Live events held for one client before it is disconnected.
pub const LIVE_BUFFER: usize = 4096;
/// Events read from the supervisor per backlog page.
pub const PAGE: u32 = 256;
/// Interval of keep-alive comments.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Tells open streams that the server is stopping (app data of the server).
#[derive(Clone)]
pub struct StreamShutdown(pub tokio::sync::watch::Receiver<bool>);

/// Resolves once `shutdown` says the server stops; never without one.
async fn stopped(shutdown: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    if let Some(rx) = shutdown {
        // An error means the server's handle is gone without a stop: keep serving.
        if rx.wait_for(|stop| *stop).await.is_ok() {
            return;
        }
    }
    futures::future::pending::<()>().await;
}

/// One event as an SSE frame: `id: <seq>` and one `data:` line of JSON.
pub fn frame(event: &Event) -> Bytes {
    // Serialising an `Event` cannot fail: it has no maps with non-string keys.
    let json = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!("id: {}\ndata: {json}\n\n", event.seq))
}

/// Receives live events for one SSE client and hands them to its response stream.
struct Forwarder {
    tx: mpsc::Sender<Event>,
}

impl Actor for Forwarder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A client that went away while no event came: stop, so the supervisor drops us.
        ctx.run_interval(KEEPALIVE, |act, ctx| {
            if act.tx.is_closed() {
                ctx.stop();
            }
        });
    }
}

impl Handler<EventPublished> for Forwarder {
    type Result = ();

    fn handle(&mut self, msg: EventPublished, ctx: &mut Self::Context) {
        // Full (client too slow) or closed (client gone): stop; the stream ends after what
        // it holds and the client resumes from its last id.
        if self.tx.try_send(msg.event).is_err() {
            ctx.stop();
        }
    }
}

struct StreamState {
    ports: SupervisorPorts,
    last: u64,
    backlog_done: bool,
    ready: VecDeque<Event>,
    live: mpsc::Receiver<Event>,
    keepalive: tokio::time::Interval,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Subscribes to the supervisor, then returns the SSE byte stream of every event after
/// `since`, until `shutdown` says the server stops. Fails only if the supervisor does not
/// take the subscription.
pub async fn event_stream(
    ports: SupervisorPorts,
    since: u64,
    shutdown: Option<StreamShutdown>,
) -> Result<impl Stream<Item = Result<Bytes, ApiError>>, ApiError> {
    let (tx, live) = mpsc::channel(LIVE_BUFFER);
    let forwarder = Forwarder { tx }.start();
    ports
        .subscribe
        .send(Subscribe {
            subscriber: forwarder.recipient(),
        })
        .await?;
    let state = StreamState {
        ports,
        last: since,
        backlog_done: false,
        ready: VecDeque::new(),
        live,
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE),
        shutdown: shutdown.map(|s| s.0),
    };
    Ok(futures::stream::unfold(state, next_frame))
}

/// Whether a backlog page read after `last` lets the stream progress: it is empty (the
/// backlog is done) or holds an event after `last`.
fn page_advances(events: &[Event], last: u64) -> bool {
    events.is_empty() || events.iter().any(|e| e.seq > last)
}

async fn next_frame(mut st: StreamState) -> Option<(Result<Bytes, ApiError>, StreamState)> {
    loop {
        if let Some(event) = st.ready.pop_front() {
            if event.seq <= st.last {
                continue;
            }
            st.last = event.seq;
            return Some((Ok(frame(&event)), st));
        }
        if !st.backlog_done {
            let page = st
                .ports
                .events
                .send(EventsSince {
                    since: st.last,
                    limit: PAGE,
                })
                .await;
            match page {
                Ok(Ok(events)) => {
                    // A full page that brings nothing new would be asked for again and
                    // again: end the stream rather than spin without progress.
                    if !page_advances(&events, st.last) {
                        return None;
                    }
                    st.backlog_done = events.len() < PAGE as usize;
                    st.ready.extend(events);
                    continue;
                }
                // The supervisor failed or went away: end the stream; the client resumes.
                Ok(Err(_)) | Err(_) => return None,
            }
        }
        tokio::select! {
            event = st.live.next() => match event {
                Some(event) => st.ready.push_back(event),
                None => return None,
            },
            _ = st.keepalive.tick() => {
                return Some((Ok(Bytes::from_static(b": keepalive\n\n")), st));
            }
            () = stopped(&mut st.shutdown) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::api::{EventReason, VmState};

    fn event(seq: u64) -> Event {
        Event {
            seq,
            at_ms: 0,
            vm: "a".into(),
            state: VmState::Running,
            reason: EventReason::User,
            detail: None,
            exit_status: None,
        }
    }

    #[test]
    fn pages_without_new_events_stop_the_stream() {
        assert!(page_advances(&[], 5));
        assert!(page_advances(&[event(6)], 5));
        assert!(page_advances(&[event(4), event(6)], 5));
        // What a wrapped `since` made the store return: old events, forever.
        assert!(!page_advances(&[event(1), event(2)], 5));
    }

    #[test]
    fn frames_carry_the_sequence_number() {
        let e = Event {
            seq: 42,
            at_ms: 7,
            vm: "web".into(),
            state: VmState::Running,
            reason: EventReason::User,
            detail: None,
            exit_status: None,
        };
        let f = String::from_utf8(frame(&e).to_vec()).unwrap();
        assert!(f.starts_with("id: 42\ndata: {"), "{f}");
        assert!(f.ends_with("}\n\n"), "{f}");
        let json = f.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        assert_eq!(serde_json::from_str::<Event>(json).unwrap(), e);
    }
}
