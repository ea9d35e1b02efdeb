//! An API's logs: the recent lines of its instances as JSON, or, with `follow=true`, those
//! and then new lines as server-sent events until the client goes away. Follows are
//! capped per user and in total ([`FollowSlots`]), and end when their user's sessions
//! are ended (a password reset or change).
use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Extension,
    extract::{RawQuery, State},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::StreamExt;
use serde::Serialize;
use souq_proto::{agent::LogLine, apis::ApiLogsRequest};
use tonic::codec::Streaming;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::{ApiError, Result},
    extract::{ApiId, Caller},
    metrics::Refusal,
    query::parse_query,
    verifier::Verifier,
    rest::{
        grpc,
        openapi::{NotFound, Unauthorized, Unprocessable},
    },
};

/// Lines sent first when `tail` is absent.
pub const DEFAULT_TAIL: u32 = 100;
/// Most lines `tail` may ask for.
pub const MAX_TAIL: u32 = 1000;
/// Most lines one answer without `follow` holds, however many instances the API has.
const MAX_LINES: usize = 10_000;
/// How long the lines without `follow` may take, and a follow may take to start.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a follow stays open; clients reconnect after it.
const MAX_FOLLOW: Duration = Duration::from_secs(3600);
/// How often an idle follow sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a follow looks whether its user's sessions were ended; the edge learns of
/// revocations every `--revocation-poll` on top of this.
const SESSION_CHECK: Duration = Duration::from_secs(1);

/// Most follows one user may hold open at once (429 beyond).
pub const MAX_FOLLOWS_PER_USER: usize = 5;
/// Most follows open at once on this edge (429 beyond).
pub const MAX_FOLLOWS: usize = 1_000;
/// The `Retry-After` of a refused follow, in seconds.
const FOLLOW_RETRY_AFTER: u64 = 30;

/// The open follows of this edge, per user and in total.
#[derive(Debug)]
pub struct FollowSlots {
    per_user: usize,
    total: usize,
    open: Mutex<(HashMap<String, usize>, usize)>,
}

impl Default for FollowSlots {
    fn default() -> Self {
        FollowSlots::new(MAX_FOLLOWS_PER_USER, MAX_FOLLOWS)
    }
}

impl FollowSlots {
    /// At most `per_user` follows per user and `total` in all.
    pub fn new(per_user: usize, total: usize) -> Self {
        FollowSlots { per_user, total, open: Mutex::default() }
    }

    /// A slot for `user`, held until the guard drops; `None` when the user or the edge
    /// is at its cap.
    pub fn try_acquire(self: &Arc<Self>, user: &str) -> Option<FollowGuard> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (users, total) = &mut *open;
        let mine = users.get(user).copied().unwrap_or(0);
        if mine >= self.per_user || *total >= self.total {
            return None;
        }
        users.insert(user.to_owned(), mine + 1);
        *total += 1;
        Some(FollowGuard { slots: self.clone(), user: user.to_owned() })
    }

    /// How many follows are open: `user`'s and in total.
    pub fn open(&self, user: &str) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (open.0.get(user).copied().unwrap_or(0), open.1)
    }
}

/// One open follow; dropping it (when the event stream ends or is dropped) frees the slot.
#[derive(Debug)]
pub struct FollowGuard {
    slots: Arc<FollowSlots>,
    user: String,
}

impl Drop for FollowGuard {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (users, total) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.user);
            }
        }
    }
}

fn too_many_follows() -> ApiError {
    let mut e = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        format!("too many log follows open (at most {MAX_FOLLOWS_PER_USER} per user); close one and retry"),
    );
    e.retry_after = Some(FOLLOW_RETRY_AFTER);
    e
}

/// What to send.
#[derive(Debug, PartialEq, Eq)]
pub struct LogsQuery {
    /// Most recent lines to send first.
    pub tail: u32,
    /// Then keep sending new lines.
    pub follow: bool,
}

/// Reads `tail` (1 to 1000, 100 by default) and `follow` (`true` or `false`; a bare
/// `follow` is true) from a query string. Other parameters are ignored.
pub fn logs_query(raw: Option<&str>) -> Result<LogsQuery> {
    let q = parse_query(raw.unwrap_or(""));
    let tail = match q.get("tail").map(String::as_str) {
        None => DEFAULT_TAIL,
        Some(t) => t
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_TAIL).contains(n))
            .ok_or_else(|| ApiError::invalid("tail", format!("must be a whole number from 1 to {MAX_TAIL}")))?,
    };
    let follow = match q.get("follow").map(String::as_str) {
        None | Some("false") => false,
        Some("" | "true") => true,
        Some(_) => return Err(ApiError::invalid("follow", "must be true or false")),
    };
    Ok(LogsQuery { tail, follow })
}

/// One line of an instance's output.
#[derive(Serialize, ToSchema)]
pub struct LineBody {
    /// The instance that wrote it.
    pub instance_id: String,
    /// `stdout`, `stderr`, or `souq` (the platform's notes: starts, crashes, restarts).
    pub stream: String,
    /// The line, without its newline.
    pub line: String,
    /// When it was written: RFC 3339 in UTC, with milliseconds.
    pub ts: String,
}

impl From<LogLine> for LineBody {
    fn from(l: LogLine) -> Self {
        let ts = chrono::DateTime::from_timestamp_millis(l.ts_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        LineBody { instance_id: l.instance_id, stream: l.stream, line: l.line, ts }
    }
}

/// Recent lines.
#[derive(Serialize, ToSchema)]
pub struct LinesBody {
    /// Oldest first per instance.
    pub lines: Vec<LineBody>,
}

/// The API's recent log lines; with `follow=true`, a `text/event-stream` whose events'
/// `data` is one line as JSON (an `error` event with a problem ends it early). A user
/// may hold [`MAX_FOLLOWS_PER_USER`] follows open, the edge [`MAX_FOLLOWS`]; 429 beyond.
#[utoipa::path(get, path = "/api/v1/apis/{id}/logs", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id"),
        ("tail" = Option<u32>, Query, description = "Most recent lines to send first: 1 to 1000, default 100"),
        ("follow" = Option<bool>, Query, description = "Then stream new lines as server-sent events")),
    responses((status = 200, description = "The lines, or with follow=true an event stream of LineBody", body = LinesBody),
        Unauthorized,
        NotFound,
        Unprocessable,
        (status = 429, description = "Too many log follows open", content_type = "application/problem+json")))]
pub async fn logs(
    State(state): State<AppState>,
    Extension(slots): Extension<Arc<FollowSlots>>,
    caller: Caller,
    ApiId(api_id): ApiId,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let q = logs_query(raw.as_deref())?;
    // The cut-off the caller's token just passed: once it grows, the session is over.
    let session = Session { verifier: state.verifier.clone(), cut_off: state.verifier.cut_off(&caller.user_id), user: caller.user_id.clone() };
    let slot = if q.follow {
        let slot = slots.try_acquire(&caller.user_id).ok_or_else(|| {
            state.metrics.refused(Refusal::Concurrency);
            too_many_follows()
        })?;
        Some(slot)
    } else {
        None
    };
    let lifetime = if q.follow { MAX_FOLLOW } else { TIMEOUT };
    let req = grpc(ApiLogsRequest { api_id, tail: q.tail, follow: q.follow }, Some(&caller.token), lifetime);
    let mut client = state.apis.clone();
    let started = tokio::time::timeout(TIMEOUT, client.api_logs(req)).await.map_err(|_| too_slow())?;
    let stream = started?.into_inner();
    if q.follow {
        return Ok(follow(stream, state.shutdown.clone(), slot, session).into_response());
    }
    let lines = tokio::time::timeout(TIMEOUT, collect(stream)).await.map_err(|_| too_slow())??;
    Ok(axum::Json(LinesBody { lines }).into_response())
}

fn too_slow() -> ApiError {
    ApiError::new(axum::http::StatusCode::GATEWAY_TIMEOUT, "timeout", "the logs did not arrive in time")
}

/// Every line of a finite stream, at most [`MAX_LINES`] (the newest are kept).
async fn collect(mut stream: Streaming<LogLine>) -> Result<Vec<LineBody>> {
    let mut lines = std::collections::VecDeque::new();
    while let Some(line) = stream.message().await? {
        if lines.len() == MAX_LINES {
            lines.pop_front();
        }
        lines.push_back(LineBody::from(line));
    }
    Ok(lines.into())
}

/// The session a follow belongs to: its user and the revocation cut-off when it began.
struct Session {
    verifier: Arc<Verifier>,
    user: String,
    cut_off: u64,
}

impl Session {
    /// Returns once the user's sessions have been ended since the follow began.
    async fn ended(self) {
        loop {
            tokio::time::sleep(SESSION_CHECK).await;
            if self.verifier.cut_off(&self.user) > self.cut_off {
                return;
            }
        }
    }
}

/// The lines as server-sent events, ending when the control plane ends the stream, on
/// an error (sent as an `error` event), at shutdown, after [`MAX_FOLLOW`], or when the
/// user's sessions are ended (a last `error` event says so, with a 401 problem). When the
/// client goes away, the response is dropped and with it the gRPC stream and `slot`.
fn follow(
    stream: Streaming<LogLine>,
    shutdown: tokio_util::sync::CancellationToken,
    slot: Option<FollowGuard>,
    session: Session,
) -> impl IntoResponse {
    let events = futures_util::stream::unfold(Some((stream, slot)), |state| async move {
        let (mut stream, slot) = state?;
        match stream.message().await {
            Ok(Some(line)) => Some((line_event(line), Some((stream, slot)))),
            Ok(None) => None,
            Err(status) => Some((error_event(ApiError::from(status)), None)),
        }
    });
    let revoked = Arc::new(AtomicBool::new(false));
    let end = {
        let revoked = revoked.clone();
        async move {
            tokio::select! {
                () = shutdown.cancelled_owned() => {}
                () = tokio::time::sleep(MAX_FOLLOW) => {}
                () = session.ended() => revoked.store(true, Ordering::Release),
            }
        }
    };
    let last = futures_util::stream::once(async move {
        revoked.load(Ordering::Acquire).then(|| error_event(ApiError::unauthenticated(SESSION_ENDED)))
    })
    .filter_map(futures_util::future::ready);
    Sse::new(events.take_until(end).chain(last).map(Ok::<_, Infallible>)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// The last event of a follow whose session was ended.
const SESSION_ENDED: &str = "the session ended: the password was changed or reset; log in again";

fn line_event(line: LogLine) -> Event {
    Event::default().json_data(LineBody::from(line)).unwrap_or_else(|_| Event::default().comment("unencodable line"))
}

fn error_event(e: ApiError) -> Event {
    Event::default().event("error").json_data(e.problem()).unwrap_or_else(|_| Event::default().event("error"))
}

/// These routes, each served and documented from its handler.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(logs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_and_follow_are_bounded_and_named() {
        assert_eq!(logs_query(None).ok(), Some(LogsQuery { tail: 100, follow: false }));
        assert_eq!(logs_query(Some("tail=5&follow=true")).ok(), Some(LogsQuery { tail: 5, follow: true }));
        assert_eq!(logs_query(Some("follow&tail=1000")).ok(), Some(LogsQuery { tail: 1000, follow: true }));
        assert_eq!(logs_query(Some("follow=false&x=y")).ok(), Some(LogsQuery { tail: 100, follow: false }));
        for bad in ["tail=0", "tail=1001", "tail=-1", "tail=abc", "tail=", "tail=99999999999"] {
            assert_eq!(logs_query(Some(bad)).err().and_then(|e| e.field).as_deref(), Some("tail"), "{bad}");
        }
        assert_eq!(logs_query(Some("follow=yes")).err().and_then(|e| e.field).as_deref(), Some("follow"));
    }

    #[test]
    fn follows_are_capped_per_user_and_in_total_and_freed_on_drop() {
        let slots = Arc::new(FollowSlots::new(2, 3));
        let a1 = slots.try_acquire("a").expect("a1");
        let a2 = slots.try_acquire("a").expect("a2");
        assert!(slots.try_acquire("a").is_none(), "a is at its cap");
        let b1 = slots.try_acquire("b").expect("b1");
        assert!(slots.try_acquire("c").is_none(), "the edge is at its cap");
        assert_eq!(slots.open("a"), (2, 3));
        drop(a1);
        assert_eq!(slots.open("a"), (1, 2));
        let c1 = slots.try_acquire("c").expect("a slot freed");
        drop((a2, b1, c1));
        assert_eq!(slots.open("a"), (0, 0));
        assert!(slots.open.lock().expect("lock").0.is_empty(), "no empty entries linger");
        let e = too_many_follows();
        assert_eq!((e.status, e.retry_after), (axum::http::StatusCode::TOO_MANY_REQUESTS, Some(FOLLOW_RETRY_AFTER)));
    }

    #[test]
    fn a_line_carries_its_time_in_rfc3339() {
        let l =
            LogLine { instance_id: "i".into(), stream: "stdout".into(), line: "hi".into(), ts_ms: 1_700_000_000_123 };
        let b = LineBody::from(l);
        assert_eq!(b.ts, "2023-11-14T22:13:20.123Z");
    }
}
