//! `serve`: a small read-only web view of the repository and its configuration (overview,
//! history, charts, snapshots and their files) and a JSON API under `/api/` with the shapes of
//! the CLI's `--json`.
//!
//! Read-only: nothing here takes a repository lock but a download (a shared one, as `export`
//! and `restore` take, which backups share), so it runs beside the daemon. Each request reads the
//! repository afresh through [`Repo::reopen`] (keys derived once at start, a new connection to
//! the index cache), so new snapshots and runs show at once.
//!
//! In memory for the server's life: the configuration, the derived keys, the token. Per request:
//! the snapshot list and the rows one page shows; a download holds one chunk and a bounded
//! channel of 64 KiB buffers (memory stays flat whatever the file's size).
//!
//! Security (format-spec/threat-model.md): only 127.0.0.1 and ::1 count as loopback; any other
//! address needs a token, asked of every request. Downloads of snapshot content need the token
//! on loopback too unless turned off. Host names other than localhost and IP literals are refused
//! on a loopback bind without a token (a DNS-rebinding page cannot read the API). Every response
//! carries the headers of [`headers::secure`]; every page escapes what it shows (maud).

mod auth;
mod browse_pages;
mod charts;
mod data;
mod download;
mod headers;
mod pages;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use zeroize::Zeroizing;

use crate::error::{Error, IoContext, Result};
use crate::lifecycle::config::Config;
use crate::repo::Repo;

pub use auth::is_loopback;

/// What `cairn serve` was asked for.
pub struct ServeOptions {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The token (from a file or the environment): required for every request on a
    /// non-loopback address, and for downloads.
    pub token: Option<Zeroizing<String>>,
    /// Downloads of snapshot content need the token even on loopback.
    pub download_token: bool,
    /// The repository directory.
    pub repo_path: PathBuf,
}

/// What every request shares.
struct Shared {
    // A template: each request takes its own handle through `Repo::reopen`.
    repo: Mutex<Repo>,
    config: Option<Config>,
    repo_path: PathBuf,
    auth: auth::Auth,
}

impl Shared {
    fn repo(&self) -> Result<Repo> {
        let guard = self.repo.lock().map_err(|_| Error::Invalid("serve: repository handle poisoned".into()))?;
        let mut r = guard.reopen()?;
        drop(guard);
        r.sync_index()?;
        Ok(r)
    }
}

type App = Arc<Shared>;

/// Refuses a listen address that would serve the repository without a token.
pub fn check_options(o: &ServeOptions) -> Result<()> {
    if !is_loopback(&o.listen) && o.token.is_none() {
        return Err(Error::Invalid(format!(
            "serve: {} is not a loopback address (127.0.0.1, ::1): a token is required (--token-file FILE or CAIRN_SERVE_TOKEN)",
            o.listen
        )));
    }
    Ok(())
}

/// Serves until the process is stopped. `ready` is called with the bound address.
pub fn serve(o: ServeOptions, repo: Repo, config: Option<Config>, ready: &dyn Fn(SocketAddr)) -> Result<()> {
    check_options(&o)?;
    if o.download_token && o.token.is_none() {
        tracing::warn!(
            "serve: no token given: downloads of snapshot content are refused (give a token, or --no-download-token)"
        );
    }
    let shared = Arc::new(Shared {
        repo: Mutex::new(repo),
        config,
        repo_path: o.repo_path.clone(),
        auth: auth::Auth::new(o.token, o.download_token, auth::is_loopback(&o.listen)),
    });
    // One thread answers; reading the repository runs on a few blocking threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .max_blocking_threads(4)
        .thread_name("cairn-serve")
        .build()
        .ctx("tokio runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(o.listen).await.ctx(o.listen.to_string())?;
        let addr = listener.local_addr().ctx(o.listen.to_string())?;
        ready(addr);
        axum::serve(listener, router(shared)).await.ctx(addr.to_string())
    })
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/history", get(history))
        .route("/charts", get(charts_page))
        .route("/snapshots", get(snapshots))
        .route("/snapshots/{id}", get(tree))
        .route("/snapshots/{id}/file", get(download::file))
        .route("/snapshots/{id}/export", get(download::export))
        .route("/style.css", get(style))
        .route("/api/status", get(api_status))
        .route("/api/history", get(api_history))
        .route("/api/snapshots", get(api_snapshots))
        .route("/api/snapshots/{id}/ls", get(api_ls))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth::check))
        .layer(axum::middleware::from_fn(headers::secure))
        .with_state(app)
}

/// An error as a page or JSON: the repository's errors say which file; the status code says
/// whose fault.
struct Failure(StatusCode, String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound(_) | Error::ObjectNotFound { .. } => StatusCode::NOT_FOUND,
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if code == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("serve: {e}");
        }
        Failure(code, e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, page(pages::error_page(self.0, &self.1))).into_response()
    }
}

/// Runs `f` on a blocking thread with a fresh repository handle.
async fn blocking<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&Shared, Repo) -> Result<T> + Send + 'static,
) -> std::result::Result<T, Failure> {
    let app = app.clone();
    let r = tokio::task::spawn_blocking(move || {
        let repo = app.repo()?;
        f(&app, repo)
    })
    .await
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("serve: worker failed: {e}")))?;
    Ok(r?)
}

fn page(m: maud::Markup) -> Response {
    axum::response::Html(m.into_string()).into_response()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Invalid(format!("serve: JSON: {e}")))
}

fn json(v: &serde_json::Value) -> Response {
    let mut body = serde_json::to_string_pretty(v).unwrap_or_default();
    body.push('\n');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn overview(State(app): State<App>) -> std::result::Result<Response, Failure> {
    let v = blocking(&app, |s, repo| data::overview(s, &repo)).await?;
    Ok(page(pages::overview(&v)))
}

async fn history(
    State(app): State<App>,
    Query(q): Query<data::HistoryQuery>,
) -> std::result::Result<Response, Failure> {
    let v = blocking(&app, move |s, _| data::history(s, &q)).await?;
    Ok(page(pages::history(&v)))
}

async fn charts_page(State(app): State<App>) -> std::result::Result<Response, Failure> {
    let v = blocking(&app, |s, repo| data::chart_data(s, &repo)).await?;
    Ok(page(pages::charts(&v)))
}

async fn snapshots(State(app): State<App>) -> std::result::Result<Response, Failure> {
    let v = blocking(&app, |_, repo| repo.snapshots()).await?;
    Ok(page(pages::snapshots(&v, app.auth.downloads_need_token())))
}

async fn tree(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<data::PathQuery>,
) -> std::result::Result<Response, Failure> {
    let v = blocking(&app, move |_, repo| data::dir(&repo, &id, q.path.as_deref().unwrap_or(""))).await?;
    Ok(page(pages::tree(&v)))
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], pages::STYLE).into_response()
}

async fn not_found() -> Failure {
    Failure(StatusCode::NOT_FOUND, "no such page".into())
}

async fn api_status(State(app): State<App>) -> std::result::Result<Response, Failure> {
    let v = blocking(&app, |s, repo| to_json(&data::status(s, &repo)?)).await?;
    Ok(json(&v))
}

async fn api_history(
    State(app): State<App>,
    Query(q): Query<data::HistoryQuery>,
) -> std::result::Result<Response, Failure> {
    let v = blocking(&app, move |s, _| to_json(&data::history(s, &q)?.runs)).await?;
    Ok(json(&v))
}

async fn api_snapshots(State(app): State<App>) -> std::result::Result<Response, Failure> {
    let v = blocking(&app, |_, repo| {
        let (all, _) = repo.snapshots()?;
        Ok(serde_json::Value::Array(all.iter().map(|(id, s)| crate::lifecycle::browse::snapshot_json(id, s)).collect()))
    })
    .await?;
    Ok(json(&v))
}

async fn api_ls(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<data::PathQuery>,
) -> std::result::Result<Response, Failure> {
    let v = blocking(&app, move |_, repo| data::ls_json(&repo, &id, q.path.as_deref())).await?;
    Ok(json(&v))
}
