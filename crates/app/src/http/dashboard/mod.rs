//! The web dashboard spool serves itself: plain HTML, CSS and JavaScript compiled into the
//! binary with `include_str!` — no framework, nothing fetched from the internet, no build step.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the page: queues (depth per status, oldest-waiting age), a queue's queued, running, retrying, scheduled, dead and recently finished tasks (timestamps, attempts, last error) with **retry** (dead/cancelled) and **cancel** (queued/scheduled/retrying) actions, rate-limit policies, breaker and degraded state, health |
//! | `GET /?operation=<id>` | one operation: steps, percent and message, updated live from `GET /v1/operations/{id}/events` without a reload |
//! | `GET /dashboard/app.js`, `GET /dashboard/style.css` | the page's script and style |
//! | `GET /v1/dashboard` | what the page needs besides the v1 API: who the request authenticated as, the rate-limit policies |
//!
//! The page itself holds no data and needs no key; everything it shows comes from the v1 API
//! (`/v1/queues`, `/v1/queues/{queue}/tasks?status=…`, `/v1/dashboard`, `/health/ready`), so
//! it is exactly as protected as the API.
//!
//! **Authentication.** With `http.api_keys` configured, the page asks for an API key and keeps
//! it in `sessionStorage` (gone when the tab closes; never in a cookie or a URL, so it is
//! neither sent automatically nor logged). Every API call is a `fetch()` with
//! `Authorization: Bearer <key>`. A browser's `EventSource` cannot send that header, so with
//! a key the live updates come from a `fetch()`-based SSE reader that parses the same
//! `text/event-stream` and, after a dropped connection, reconnects with `Last-Event-ID` set to
//! the last event it saw, as `EventSource` does. Without keys (loopback-only mode) the page
//! uses `EventSource` itself, which resumes on its own. A 401 brings the key form back.
//!
//! **Project scope.** The dashboard follows the API's rule exactly
//! ([`crate::http::middleware::AuthLayer`]): only paths under `/v1/projects/{project}` are
//! project-scoped. Queues and operations are not owned by a project, so any valid key sees
//! every queue and operation — on the dashboard as on `GET /v1/queues`. What a key is scoped
//! to is shown (`GET /v1/dashboard` reports the key's id and projects); project data (the
//! cache) is not shown on the dashboard at all.
//!
//! The page is served with a strict `Content-Security-Policy` (scripts, styles and
//! connections to this origin only, no inline script, not frameable) and task data is only
//! ever inserted as text, never as HTML.

/// `GET /`.
pub(crate) const INDEX_HTML: &str = include_str!("assets/index.html");
/// `GET /dashboard/app.js`.
pub(crate) const APP_JS: &str = include_str!("assets/app.js");
/// `GET /dashboard/style.css`.
pub(crate) const STYLE_CSS: &str = include_str!("assets/style.css");

/// The `Content-Security-Policy` of every dashboard response.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";
