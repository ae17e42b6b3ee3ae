//! Downloads: one file of a snapshot (as `cat` writes it) and a snapshot's conventional export
//! (as `export` writes it), streamed from a blocking thread through a bounded channel.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::data::PathQuery;
use super::{blocking, App, Failure};
use crate::error::{Error, Result};
use crate::format::manifest::NodeKind;
use crate::repo::Repo;

/// Buffers in flight per download: with [`BUF`], at most this many times 64 KiB wait for a
/// slow client.
const DEPTH: usize = 4;
const BUF: usize = 64 << 10;

/// A `Write` that hands its bytes to the response body; a client that went away ends the copy
/// with `BrokenPipe`.
struct ChannelWriter(mpsc::Sender<std::io::Result<Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A body fed by `produce` on a blocking thread. An error after the headers went out cannot
/// change the status: the connection is cut (the client sees a truncated transfer, never a
/// complete-looking file) and the error is logged.
fn stream(
    what: String,
    produce: impl FnOnce(&mut std::io::BufWriter<ChannelWriter>) -> Result<()> + Send + 'static,
) -> Body {
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(DEPTH);
    let err_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = std::io::BufWriter::with_capacity(BUF, ChannelWriter(tx));
        let r = produce(&mut w).and_then(|()| w.flush().map_err(|e| Error::io(&what, e)));
        if let Err(e) = r {
            if !matches!(&e, Error::Io { err, .. } if err.kind() == std::io::ErrorKind::BrokenPipe) {
                tracing::error!("serve: download of {what}: {e}");
            }
            let _ = err_tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `/snapshots/ID/file?path=P`: the bytes `cairn cat ID P` writes.
pub(super) async fn file(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PathQuery>,
) -> std::result::Result<Response, Failure> {
    let path = q.path.unwrap_or_default();
    let p = path.clone();
    let (repo, node) = blocking(&app, move |_, repo: Repo| {
        let (_, snap) = repo.resolve(&id)?;
        let node = crate::ops::restore::find_node(&repo, &snap, &p)?;
        if node.kind != NodeKind::File {
            return Err(Error::Invalid(format!("{p}: not a regular file")));
        }
        Ok((repo, node))
    })
    .await?;
    let size = node.size;
    let body = stream(path.clone(), move |w| {
        let _lock = crate::store::lock::Lock::acquire(repo.store(), false, "serve download")?;
        crate::ops::restore::write_content(&repo, &node, w)?;
        Ok(())
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".parse().expect("static")),
            (header::CONTENT_DISPOSITION, super::headers::attachment(base_name(&path))),
            (header::CONTENT_LENGTH, size.into()),
        ],
        body,
    )
        .into_response())
}

/// `/snapshots/ID/export`: the archive `cairn export ID` writes (`.db.gz`, `.sql.gz`,
/// `.tar.gz`), named as it names it.
pub(super) async fn export(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
) -> std::result::Result<Response, Failure> {
    let (repo, snap, single, name) = blocking(&app, move |s, repo: Repo| {
        let (_, snap) = repo.resolve(&id)?;
        let single = crate::ops::export::single_node(&repo, &snap)?;
        let prefix = s.config.as_ref().map_or("cairn", |c| c.backup.name.as_str());
        let name = crate::ops::export::export_name(prefix, &snap);
        Ok((repo, snap, single, name))
    })
    .await?;
    let what = name.clone();
    let body = stream(name.clone(), move |w| {
        let _lock = crate::store::lock::Lock::acquire(repo.store(), false, "serve export")?;
        crate::ops::export::write_archive(&repo, &snap, single, &what, w)?;
        Ok(())
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".parse().expect("static")),
            (header::CONTENT_DISPOSITION, super::headers::attachment(&name)),
        ],
        body,
    )
        .into_response())
}
