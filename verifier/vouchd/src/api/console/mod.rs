//! The web console at `/ui/`, on the management listener (same TLS, same principals): pages
//! rendered on the server from templates compiled into the binary (`templates/console/`,
//! askama), one small script for live regions and one stylesheet (`static/console/`, embedded).
//!
//! It is an edge like the API: handlers take a [`Console`] (a signed-in session of a
//! TrustedAdmins member, checked again on every request) and read through the service core
//! (`service::console`). Sign-in exchanges a bearer token for a session cookie (`HttpOnly`,
//! `Secure`, `SameSite=Strict`, `__Host-` prefixed); every form that changes state carries the
//! session's CSRF token, and a POST whose `Origin` is another site is refused. Every answer has
//! a strict Content-Security-Policy: no inline script or style, nothing from elsewhere.
//!
//! The console changes no configuration and offers no host operation: those need a management
//! server's signature over the request, which a browser session cannot make.

mod pages;

use axum::Router;
use axum::extract::{Form, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::service::console::{self as core, Signed, same_secret};
use crate::service::{AppState, Error};

/// The session cookie: `__Host-` so that it is bound to this origin, HTTPS and path `/`.
pub const SESSION_COOKIE: &str = "__Host-vouch-session";
/// The sign-in form's CSRF cookie (there is no session yet to hold the token).
pub const SIGN_IN_COOKIE: &str = "__Host-vouch-sign-in";
/// Sent by the console's script on its refreshes: such a request without a session gets 401
/// instead of a redirect to the sign-in page.
const LIVE_HEADER: &str = "vouch-live";
/// The Content-Security-Policy of every console answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const SCRIPT: &str = include_str!("../../../static/console/console.js");
const STYLE: &str = include_str!("../../../static/console/console.css");

/// The console's routes (merged into the API router, so that they share its listener, limits
/// and metrics; not in the OpenAPI document, which describes the JSON API).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/fleet", get(pages::fleet))
        .route("/ui/fleet/live", get(pages::fleet_live))
        .route("/ui/hosts", get(pages::hosts))
        .route("/ui/hosts/{ek_hash}", get(pages::host))
        .route("/ui/clusters", get(pages::clusters))
        .route("/ui/events", get(pages::events))
        .route("/ui/events/live", get(pages::events_live))
        .route("/ui/static/console.js", get(script))
        .route("/ui/static/console.css", get(style))
        .layer(middleware::from_fn(security_headers))
}

/// Headers on every console answer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Not `no-referrer`: with it, browsers send `Origin: null` on form posts.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `Secure`, `SameSite=Strict`, path `/`.
fn set_cookie(name: &str, value: &str, max_age: i64) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    ))
    .map_err(|e| Error::Internal(format!("cookie: {e}")))
}

/// A signed-in console request. Without a valid session a page request is sent to the sign-in
/// page and a live refresh gets 401; a principal outside TrustedAdmins gets 403.
#[derive(Debug, Clone)]
pub struct Console(pub Signed);

/// Why a console request was not let in.
#[derive(Debug)]
pub enum Refused {
    SignIn,
    Error(Error),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn => Redirect::to("/ui/sign-in").into_response(),
            Self::Error(e) => pages::error_page(&e),
        }
    }
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refused> {
        let what = format!("{} {}", parts.method, parts.uri.path());
        let id = cookie(&parts.headers, SESSION_COOKIE);
        let live = parts.headers.contains_key(LIVE_HEADER);
        match core::session(state, id, &what).await {
            Ok(signed) => Ok(Self(signed)),
            Err(Error::Unauthenticated(_)) if !live => Err(Refused::SignIn),
            Err(e) => Err(Refused::Error(e)),
        }
    }
}

/// Refuses a state-changing request whose `Origin` is not this site (browsers send it with
/// every POST); the CSRF token is checked besides. The site is the request's authority (HTTP/2)
/// or `Host` header (HTTP/1.1).
fn same_origin(uri: &Uri, headers: &HeaderMap) -> Result<(), Error> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    if origin.to_str().ok() == Some(format!("https://{host}").as_str()) {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "the form was sent from another site (Origin)".into(),
        ))
    }
}

/// Refuses a form whose CSRF token is not `expected`.
fn check_csrf(sent: &str, expected: Option<&str>) -> Result<(), Error> {
    match expected {
        Some(e) if !e.is_empty() && same_secret(sent, e) => Ok(()),
        _ => Err(Error::Forbidden(
            "the form's CSRF token is missing or wrong; reload the page and try again".into(),
        )),
    }
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Redirect {
    let signed_in = core::session(&state, cookie(&headers, SESSION_COOKIE), "GET /ui/")
        .await
        .is_ok();
    Redirect::to(if signed_in {
        "/ui/fleet"
    } else {
        "/ui/sign-in"
    })
}

/// The sign-in page, with a fresh CSRF token in the form and in a cookie.
fn sign_in_form(status: StatusCode, error: &str) -> Response {
    let csrf = match crate::random::<32>() {
        Ok(bytes) => crate::hex(&bytes),
        Err(_) => return pages::error_page(&Error::Internal("RNG failure".into())),
    };
    let mut response = pages::sign_in(&csrf, error);
    *response.status_mut() = status;
    match set_cookie(SIGN_IN_COOKIE, &csrf, 3600) {
        Ok(c) => {
            response.headers_mut().append(header::SET_COOKIE, c);
            response
        }
        Err(e) => pages::error_page(&e),
    }
}

async fn sign_in_page() -> Response {
    sign_in_form(StatusCode::OK, "")
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

async fn sign_in(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let checked = same_origin(&uri, &headers)
        .and_then(|()| check_csrf(&form.csrf, cookie(&headers, SIGN_IN_COOKIE)));
    if let Err(e) = checked {
        let e = crate::service::auth::deny(&state, "anonymous", "POST /ui/sign-in", e);
        return sign_in_form(StatusCode::FORBIDDEN, &e.reason());
    }
    match core::sign_in(&state, &form.token, "POST /ui/sign-in").await {
        Ok(id) => {
            let mut response = Redirect::to("/ui/fleet").into_response();
            let cookies = [
                set_cookie(SESSION_COOKIE, &id, core::SESSION_LIFETIME_SECS),
                set_cookie(SIGN_IN_COOKIE, "", 0),
            ];
            for c in cookies {
                match c {
                    Ok(c) => {
                        response.headers_mut().append(header::SET_COOKIE, c);
                    }
                    Err(e) => return pages::error_page(&e),
                }
            }
            response
        }
        Err(e) => sign_in_form(crate::api::error::status(&e), &e.reason()),
    }
}

/// The sign-out form.
#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(state): State<AppState>,
    Console(signed): Console,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let checked =
        same_origin(&uri, &headers).and_then(|()| check_csrf(&form.csrf, Some(&signed.csrf)));
    if let Err(e) = checked {
        let e = crate::service::auth::deny(&state, signed.admin.name(), "POST /ui/sign-out", e);
        return pages::error_page(&e);
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE)
        && let Err(e) = core::sign_out(&state, id)
    {
        return pages::error_page(&e);
    }
    tracing::info!(principal = signed.admin.name(), "console sign-out");
    let mut response = Redirect::to("/ui/sign-in").into_response();
    match set_cookie(SESSION_COOKIE, "", 0) {
        Ok(c) => {
            response.headers_mut().append(header::SET_COOKIE, c);
            response
        }
        Err(e) => pages::error_page(&e),
    }
}
