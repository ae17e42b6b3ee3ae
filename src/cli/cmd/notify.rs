//! `notify --test`: one test event through every configured channel, each channel's result.

use anyhow::{bail, Result};

use crate::cli::{render, Ctx, Finish};
use crate::lifecycle::notify::{self, Event};

pub(in crate::cli) fn test(ctx: &Ctx) -> Result<Finish> {
    let cfg = ctx.require_config()?;
    let Some(n) = &cfg.backup.notify else {
        bail!("{}: no \"notify\" section: no channel to test", cfg.file.display());
    };
    let ev = Event::new(
        "test",
        "notify",
        chrono::Local::now(),
        format!("test notification from cairn ({}): this channel works", cfg.backup.name),
    );
    let results = notify::send_each(n, &ev);
    if results.is_empty() {
        bail!("{}: \"notify\" names no channel (ntfy, webhook, command, email)", cfg.file.display());
    }
    if ctx.json() {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|(c, r)| serde_json::json!({"channel": c, "ok": r.is_ok(), "error": r.as_ref().err()}))
            .collect();
        render::print_json(&serde_json::Value::Array(v));
    } else {
        for (chan, r) in &results {
            match r {
                Ok(()) => println!("{chan}: ok"),
                Err(e) => println!("{chan}: FAILED: {e}"),
            }
        }
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} notification channels failed", results.len());
    }
    Ok(Finish::Ok)
}
