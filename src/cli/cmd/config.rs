//! `config check`: validate the configuration and print it resolved.

use anyhow::Result;
use serde_json::json;

use crate::cli::{render, Ctx, Finish};

pub(in crate::cli) fn check(ctx: &Ctx) -> Result<Finish> {
    let c = ctx.require_config()?;
    let mut v = c.resolved_json();
    if let Some(r) = &ctx.cli.repo {
        v["backup"]["repository"] = json!(r);
    }
    render::print_json(&v);
    Ok(Finish::Ok)
}
