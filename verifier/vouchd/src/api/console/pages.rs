//! The console's pages: what each template shows, made from the core's read model. Every value
//! reaches the templates as text; askama escapes it for HTML.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vouch_api::utc as when;

use super::Console;
use crate::service::console::{self as core, TimelineEntry};
use crate::service::{AppState, Error};
use crate::store::{EventFilter, Host, HostQuery, HostState};

/// Hosts per page.
pub const HOSTS_PER_PAGE: u32 = 50;
/// Events per page.
pub const EVENTS_PER_PAGE: u32 = 100;

/// A rendered template as an HTML answer.
fn html<T: Template>(template: &T) -> Response {
    match template.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// The fields of the page frame (`base.html`): the title, and for a signed-in page the
/// principal, the session's CSRF token and the current section.
struct Frame {
    title: String,
    user: String,
    csrf: String,
    nav: &'static str,
}

impl Frame {
    fn new(title: impl Into<String>, signed: &core::Signed, nav: &'static str) -> Self {
        Self {
            title: title.into(),
            user: signed.admin.name().to_owned(),
            csrf: signed.csrf.clone(),
            nav,
        }
    }

    /// The frame of a page shown without a session.
    fn anonymous(title: impl Into<String>, csrf: &str) -> Self {
        Self {
            title: title.into(),
            user: String::new(),
            csrf: csrf.to_owned(),
            nav: "",
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    frame: Frame,
    message: String,
}

/// An error as a page with the error's status.
pub fn error_page(e: &Error) -> Response {
    let status = crate::api::error::status(e);
    if let Error::Internal(detail) = e {
        tracing::error!(%detail, "internal error");
    }
    let page = ErrorPage {
        frame: Frame::anonymous(status.canonical_reason().unwrap_or("Error"), ""),
        message: e.reason(),
    };
    let mut response = html(&page);
    *response.status_mut() = status;
    response
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    frame: Frame,
    error: String,
}

/// The sign-in page.
pub fn sign_in(csrf: &str, error: &str) -> Response {
    html(&SignInPage {
        frame: Frame::anonymous("Sign in", csrf),
        error: error.to_owned(),
    })
}

// ---- Formatting.

fn when_or(t: Option<i64>, none: &str) -> String {
    t.map_or_else(|| none.to_owned(), when)
}

/// A state in words.
pub fn state_text(s: HostState) -> &'static str {
    match s {
        HostState::Attested => "Attested",
        HostState::NotAttested => "Not attested",
        HostState::Unknown => "Unknown",
    }
}

/// A state's name as stored (`not_attested`), for CSS classes and the state filter.
fn state_class(s: &str) -> String {
    match HostState::parse(s) {
        Some(state) => state.as_str().to_owned(),
        None => "unknown".to_owned(),
    }
}

fn state_word(s: &str) -> String {
    HostState::parse(s).map_or_else(|| s.to_owned(), |st| state_text(st).to_owned())
}

/// Percent-encodes a query value.
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?k=v&...` of the non-empty pairs.
fn query_string(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", query_value(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A query parameter: empty means absent.
fn given(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

// ---- Fleet.

struct CountRow {
    cluster: String,
    cluster_query: String,
    attested: u64,
    not_attested: u64,
    not_attested_any: bool,
    unknown: u64,
    total: u64,
}

struct ChangeRow {
    at: String,
    ek_hash: String,
    host: String,
    from: String,
    from_class: String,
    to: String,
    to_class: String,
    reason: String,
}

struct ExpiringRow {
    ek_hash: String,
    name: String,
    cluster: String,
    valid_until: String,
}

/// The fleet's live region. It holds no clock: the script replaces the region only when
/// something in it changed, so that keyboard focus inside it is not lost on every refresh.
struct FleetView {
    clusters: Vec<CountRow>,
    changes: Vec<ChangeRow>,
    expiring: Vec<ExpiringRow>,
}

async fn fleet_view(state: &AppState) -> Result<FleetView, Error> {
    let now = crate::now();
    let fleet = core::fleet(state, now).await?;
    Ok(FleetView {
        clusters: fleet
            .clusters
            .iter()
            .map(|c| CountRow {
                cluster_query: query_value(&c.cluster),
                cluster: c.cluster.clone(),
                attested: c.attested,
                not_attested: c.not_attested,
                not_attested_any: c.not_attested > 0,
                unknown: c.unknown,
                total: c.total(),
            })
            .collect(),
        changes: fleet
            .changes
            .into_iter()
            .map(|c| ChangeRow {
                at: when(c.event.at),
                host: c.name.clone().unwrap_or_else(|| c.event.subject.clone()),
                ek_hash: c.event.subject.clone(),
                from: state_word(&c.from),
                from_class: state_class(&c.from),
                to: state_word(&c.to),
                to_class: state_class(&c.to),
                reason: c.reason.unwrap_or_default(),
            })
            .collect(),
        expiring: fleet
            .expiring
            .into_iter()
            .map(|h| ExpiringRow {
                valid_until: when_or(h.valid_until, ""),
                ek_hash: h.ek_hash,
                name: h.name,
                cluster: h.cluster,
            })
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "console/fleet.html")]
struct FleetPage {
    frame: Frame,
    fleet: FleetView,
}

#[derive(Template)]
#[template(path = "console/fleet_live.html")]
struct FleetLive {
    fleet: FleetView,
}

pub async fn fleet(State(state): State<AppState>, Console(signed): Console) -> Response {
    match fleet_view(&state).await {
        Ok(fleet) => html(&FleetPage {
            frame: Frame::new("Fleet", &signed, "fleet"),
            fleet,
        }),
        Err(e) => error_page(&e),
    }
}

pub async fn fleet_live(State(state): State<AppState>, _console: Console) -> Response {
    match fleet_view(&state).await {
        Ok(fleet) => html(&FleetLive { fleet }),
        Err(e) => error_page(&e),
    }
}

// ---- Hosts.

/// The hosts page's query.
#[derive(Debug, Default, Deserialize)]
pub struct HostsQuery {
    cluster: Option<String>,
    state: Option<String>,
    version: Option<String>,
    q: Option<String>,
    /// From 1.
    page: Option<u64>,
}

struct Choice {
    value: String,
    label: String,
    selected: bool,
}

struct HostRow {
    ek_hash: String,
    ek_short: String,
    name: String,
    cluster: String,
    state: String,
    state_class: String,
    software_version: String,
    valid_until: String,
}

impl From<Host> for HostRow {
    fn from(h: Host) -> Self {
        Self {
            ek_short: h
                .ek_hash
                .get(..16)
                .map_or_else(|| h.ek_hash.clone(), |s| format!("{s}…")),
            ek_hash: h.ek_hash,
            name: h.name,
            cluster: h.cluster,
            state: state_text(h.state).to_owned(),
            state_class: h.state.as_str().to_owned(),
            software_version: h.software_version.unwrap_or_else(|| "—".into()),
            valid_until: when_or(h.valid_until, "—"),
        }
    }
}

#[derive(Template)]
#[template(path = "console/hosts.html")]
struct HostsPage {
    frame: Frame,
    clusters: Vec<Choice>,
    states: Vec<Choice>,
    versions: Vec<Choice>,
    q: String,
    summary: String,
    hosts: Vec<HostRow>,
    previous: String,
    next: String,
}

pub async fn hosts(
    State(state): State<AppState>,
    Console(signed): Console,
    Query(query): Query<HostsQuery>,
) -> Response {
    let cluster = given(&query.cluster);
    let state_filter = given(&query.state);
    let host_state = match state_filter.as_deref().map(HostState::parse) {
        None => None,
        Some(Some(s)) => Some(s),
        Some(None) => {
            return error_page(&Error::BadRequest(
                "state is one of attested, not_attested, unknown".into(),
            ));
        }
    };
    let version = given(&query.version);
    let search = given(&query.q);
    let page = query.page.unwrap_or(1).max(1);
    let offset = (page - 1).saturating_mul(u64::from(HOSTS_PER_PAGE));
    let found = core::hosts(
        &state,
        HostQuery {
            cluster: cluster.clone(),
            state: host_state,
            software_version: version.clone(),
            search: search.clone(),
            offset,
            limit: HOSTS_PER_PAGE,
        },
    )
    .await;
    let found = match found {
        Ok(f) => f,
        Err(e) => return error_page(&e),
    };
    let total = found.page.total;
    let shown = u64::try_from(found.page.hosts.len()).unwrap_or(0);
    let summary = if total == 0 {
        "No host matches.".to_owned()
    } else if shown == 0 {
        format!("{total} hosts match; this page is past the last.")
    } else {
        format!("Hosts {} to {} of {total}.", offset + 1, offset + shown)
    };
    let (c, s, v, q) = (
        cluster.clone().unwrap_or_default(),
        state_filter.clone().unwrap_or_default(),
        version.clone().unwrap_or_default(),
        search.clone().unwrap_or_default(),
    );
    let link = |page: u64| {
        let p = page.to_string();
        format!(
            "/ui/hosts{}",
            query_string(&[
                ("cluster", &c),
                ("state", &s),
                ("version", &v),
                ("q", &q),
                ("page", &p)
            ])
        )
    };
    let previous = if page > 1 {
        link(page - 1)
    } else {
        String::new()
    };
    let next = if offset + shown < total {
        link(page + 1)
    } else {
        String::new()
    };
    let choices = |values: Vec<String>, selected: &Option<String>| -> Vec<Choice> {
        values
            .into_iter()
            .map(|value| Choice {
                selected: selected.as_deref() == Some(value.as_str()),
                label: value.clone(),
                value,
            })
            .collect()
    };
    let states = [
        HostState::Attested,
        HostState::NotAttested,
        HostState::Unknown,
    ]
    .into_iter()
    .map(|st| Choice {
        value: st.as_str().to_owned(),
        label: state_text(st).to_owned(),
        selected: host_state == Some(st),
    })
    .collect();
    html(&HostsPage {
        frame: Frame::new("Hosts", &signed, "hosts"),
        clusters: choices(found.clusters, &cluster),
        states,
        versions: choices(found.versions, &version),
        q: search.unwrap_or_default(),
        summary,
        hosts: found.page.hosts.into_iter().map(HostRow::from).collect(),
        previous,
        next,
    })
}

// ---- Host.

struct HostFacts {
    ek_hash: String,
    cluster: String,
    state: String,
    state_class: String,
    software_version: String,
    attested_at: String,
    valid_until: String,
    ak_bound: String,
    added_by: String,
    created_at: String,
}

struct PcrLine {
    pcr: u32,
    expected: String,
    presented: String,
    matches: bool,
}

struct EventLine {
    pcr: u32,
    position: usize,
    number: String,
    expected: String,
    presented: String,
}

struct ComparisonView {
    version: String,
    bank: String,
    pcrs: Vec<PcrLine>,
    events: Vec<EventLine>,
}

struct TimelineLine {
    at: String,
    what: String,
    class: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/host.html")]
struct HostPage {
    frame: Frame,
    host: HostFacts,
    has_refusal: bool,
    refusal_at: String,
    refusal_reason: String,
    presented_kept: bool,
    comparisons: Vec<ComparisonView>,
    timeline: Vec<TimelineLine>,
}

fn timeline_line(entry: TimelineEntry) -> TimelineLine {
    match entry {
        TimelineEntry::Result(r) if r.attested => TimelineLine {
            at: when(r.at),
            what: "Attested".into(),
            class: "attested".into(),
            detail: format!(
                "software version {}, valid until {}",
                r.software_version.unwrap_or_default(),
                when_or(r.valid_until, "—")
            ),
        },
        TimelineEntry::Result(r) => TimelineLine {
            at: when(r.at),
            what: "Refused".into(),
            class: "not_attested".into(),
            detail: r.reason.unwrap_or_default(),
        },
        TimelineEntry::Event(e) => {
            let detail = if e.kind == "host.state_changed" {
                let get = |k: &str| {
                    e.detail
                        .get(k)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                format!("{} → {}", state_word(&get("from")), state_word(&get("to")))
            } else {
                e.detail.to_string()
            };
            TimelineLine {
                at: when(e.at),
                what: e.kind,
                class: "event".into(),
                detail,
            }
        }
    }
}

pub async fn host(
    State(state): State<AppState>,
    Console(signed): Console,
    Path(ek_hash): Path<String>,
) -> Response {
    let ek_hash = ek_hash.to_ascii_lowercase();
    if ek_hash.len() != 64 || crate::unhex(&ek_hash).is_none() {
        return error_page(&Error::BadRequest(
            "an EK hash is 64 hex digits (SHA-256)".into(),
        ));
    }
    let detail = match core::host(&state, ek_hash).await {
        Ok(d) => d,
        Err(e) => return error_page(&e),
    };
    let h = detail.host;
    let facts = HostFacts {
        ek_hash: h.ek_hash.clone(),
        cluster: h.cluster.clone(),
        state: state_text(h.state).to_owned(),
        state_class: h.state.as_str().to_owned(),
        software_version: h.software_version.clone().unwrap_or_else(|| "—".into()),
        attested_at: when_or(h.attested_at, "never"),
        valid_until: when_or(h.valid_until, "—"),
        ak_bound: if h.ak_public.is_some() { "yes" } else { "no" }.into(),
        added_by: h.added_by.clone(),
        created_at: when(h.created_at),
    };
    let (has_refusal, refusal_at, refusal_reason, presented_kept, comparisons) =
        match detail.refusal {
            Some(r) => (
                true,
                when(r.at),
                r.reason,
                r.presented_kept,
                r.comparisons
                    .into_iter()
                    .map(|c| ComparisonView {
                        version: c.version,
                        bank: c.bank,
                        pcrs: c
                            .pcrs
                            .into_iter()
                            .map(|p| PcrLine {
                                pcr: p.pcr,
                                expected: p.expected,
                                presented: p.presented,
                                matches: p.matches,
                            })
                            .collect(),
                        events: c
                            .events
                            .into_iter()
                            .map(|e| EventLine {
                                pcr: e.pcr,
                                position: e.position,
                                number: e.number.map_or_else(|| "—".into(), |n| n.to_string()),
                                expected: e.expected.unwrap_or_else(|| "(none)".into()),
                                presented: e.presented.unwrap_or_else(|| "(none)".into()),
                            })
                            .collect(),
                    })
                    .collect(),
            ),
            None => (false, String::new(), String::new(), false, Vec::new()),
        };
    html(&HostPage {
        frame: Frame::new(format!("Host {}", h.name), &signed, "hosts"),
        host: facts,
        has_refusal,
        refusal_at,
        refusal_reason,
        presented_kept,
        comparisons,
        timeline: detail.timeline.into_iter().map(timeline_line).collect(),
    })
}

// ---- Clusters.

struct CaLine {
    id: String,
    subject: String,
    not_after: String,
}

struct EkLine {
    ek_hash: String,
    kind: String,
    created_at: String,
}

struct VersionLink {
    name: String,
    query: String,
}

struct EndpointLine {
    endpoint: String,
    status: String,
    class: String,
    problem: String,
}

struct ClusterView {
    name: String,
    name_query: String,
    trust: Vec<String>,
    pcrs: String,
    bank: String,
    versions: Vec<VersionLink>,
    provider: String,
    endpoints: Vec<EndpointLine>,
    cas: Vec<CaLine>,
    eks: Vec<EkLine>,
}

#[derive(Template)]
#[template(path = "console/clusters.html")]
struct ClustersPage {
    frame: Frame,
    clusters: Vec<ClusterView>,
}

pub async fn clusters(State(state): State<AppState>, Console(signed): Console) -> Response {
    let clusters = match core::clusters(&state).await {
        Ok(c) => c,
        Err(e) => return error_page(&e),
    };
    let now = crate::now();
    let views = clusters
        .into_iter()
        .map(|c| ClusterView {
            name_query: query_value(&c.cluster.name),
            name: c.cluster.name.clone(),
            trust: c.trust,
            pcrs: c
                .cluster
                .pcrs
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            bank: c.cluster.bank.clone(),
            versions: c
                .versions
                .into_iter()
                .map(|v| VersionLink {
                    query: query_value(&v),
                    name: v,
                })
                .collect(),
            provider: match &c.provider {
                Some(p) => format!(
                    "{} (key server {}, primary key {} version {}, {:?} wrapping)",
                    p.provider.name,
                    p.provider.key_server,
                    p.provider.primary_key_id,
                    p.provider.primary_key_version,
                    p.provider.wrapping
                ),
                None => "none".into(),
            },
            endpoints: c
                .provider
                .map(|p| {
                    p.endpoints
                        .into_iter()
                        .map(|e| EndpointLine {
                            endpoint: e.endpoint,
                            status: if e.problem.is_none() {
                                "Reachable"
                            } else {
                                "Unreachable"
                            }
                            .into(),
                            class: if e.problem.is_none() { "ok" } else { "bad" }.into(),
                            problem: e.problem.map(|p| format!("({p})")).unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            cas: c
                .cas
                .into_iter()
                .map(|a| CaLine {
                    not_after: match a.not_after {
                        Some(t) if t < now => format!("{} (expired)", when(t)),
                        Some(t) => when(t),
                        None => "unreadable".into(),
                    },
                    id: a.id,
                    subject: a.subject,
                })
                .collect(),
            eks: c
                .eks
                .into_iter()
                .map(|e| EkLine {
                    ek_hash: e.ek_hash,
                    kind: format!("{:?}", e.kind),
                    created_at: when(e.created_at),
                })
                .collect(),
        })
        .collect();
    html(&ClustersPage {
        frame: Frame::new("Clusters", &signed, "clusters"),
        clusters: views,
    })
}

// ---- Events.

/// The events page's query.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    kind: Option<String>,
    subject: Option<String>,
    before: Option<i64>,
}

struct EventLineView {
    id: i64,
    at: String,
    kind: String,
    subject: String,
    host_link: bool,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/events.html")]
struct EventsPage {
    frame: Frame,
    kind: String,
    subject: String,
    live: String,
    older: String,
    events: Vec<EventLineView>,
}

#[derive(Template)]
#[template(path = "console/events_live.html")]
struct EventsLive {
    events: Vec<EventLineView>,
}

async fn event_lines(state: &AppState, query: &EventsQuery) -> Result<Vec<EventLineView>, Error> {
    let filter = EventFilter {
        kind_prefix: given(&query.kind),
        subject: given(&query.subject),
        before: query.before,
        after: None,
        limit: EVENTS_PER_PAGE,
    };
    Ok(core::events(state, filter)
        .await?
        .into_iter()
        .map(|e| EventLineView {
            id: e.id,
            at: when(e.at),
            host_link: e.kind.starts_with("host.")
                && e.subject.len() == 64
                && crate::unhex(&e.subject).is_some(),
            kind: e.kind,
            subject: e.subject,
            detail: e.detail.to_string(),
        })
        .collect())
}

pub async fn events(
    State(state): State<AppState>,
    Console(signed): Console,
    Query(query): Query<EventsQuery>,
) -> Response {
    let events = match event_lines(&state, &query).await {
        Ok(e) => e,
        Err(e) => return error_page(&e),
    };
    let kind = given(&query.kind).unwrap_or_default();
    let subject = given(&query.subject).unwrap_or_default();
    let older = match events.last() {
        Some(last) if events.len() == EVENTS_PER_PAGE as usize => {
            let before = last.id.to_string();
            format!(
                "/ui/events{}",
                query_string(&[("kind", &kind), ("subject", &subject), ("before", &before)])
            )
        }
        _ => String::new(),
    };
    // The newest page refreshes itself; an older page stays as it is.
    let live = if query.before.is_none() {
        format!(
            "/ui/events/live{}",
            query_string(&[("kind", &kind), ("subject", &subject)])
        )
    } else {
        String::new()
    };
    html(&EventsPage {
        frame: Frame::new("Events", &signed, "events"),
        kind,
        subject,
        live,
        older,
        events,
    })
}

pub async fn events_live(
    State(state): State<AppState>,
    _console: Console,
    Query(query): Query<EventsQuery>,
) -> Response {
    match event_lines(&state, &query).await {
        Ok(events) => html(&EventsLive { events }),
        Err(e) => error_page(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("a b&c"), "a%20b%26c");
        assert_eq!(
            query_string(&[("a", "1"), ("b", ""), ("c", "x/y")]),
            "?a=1&c=x%2Fy"
        );
    }
}
