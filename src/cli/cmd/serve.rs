//! `serve`: the read-only status page and JSON API.

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use crate::cli::args::ServeArgs;
use crate::cli::{Ctx, Finish};
use crate::lifecycle::serve::ServeOptions;

/// Shorter tokens are refused: the token is all that guards a non-loopback address.
const MIN_TOKEN: usize = 16;

/// The token: the first line of --token-file, else CAIRN_SERVE_TOKEN.
fn token(a: &ServeArgs) -> Result<Option<Zeroizing<String>>> {
    let (t, from) = match &a.token_file {
        Some(f) => {
            let raw = Zeroizing::new(
                std::fs::read_to_string(f).with_context(|| format!("{}: reading the token", f.display()))?,
            );
            (Zeroizing::new(raw.lines().next().unwrap_or("").trim().to_string()), f.display().to_string())
        }
        None => match std::env::var("CAIRN_SERVE_TOKEN") {
            Ok(v) => (Zeroizing::new(v.trim().to_string()), "CAIRN_SERVE_TOKEN".to_string()),
            Err(_) => return Ok(None),
        },
    };
    if t.len() < MIN_TOKEN {
        bail!("{from}: the token must be at least {MIN_TOKEN} characters (e.g. `openssl rand -hex 24`)");
    }
    Ok(Some(t))
}

pub(in crate::cli) fn run(ctx: &Ctx, a: &ServeArgs) -> Result<Finish> {
    let o = ServeOptions {
        listen: a.listen,
        token: token(a)?,
        download_token: !a.no_download_token,
        repo_path: ctx.repo_path()?,
    };
    // Refused before the password is asked for.
    crate::lifecycle::serve::check_options(&o)?;
    let repo = ctx.open()?;
    let config = ctx.config()?.cloned();
    let quiet = ctx.quiet();
    crate::lifecycle::serve::serve(o, repo, config, &|addr| {
        if !quiet {
            // The one line a supervisor or a test waits for.
            println!("serving http://{addr}/");
        }
    })?;
    Ok(Finish::Ok)
}
