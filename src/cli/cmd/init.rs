//! `init`: create a repository.

use anyhow::Result;
use serde_json::json;

use crate::cli::args::InitArgs;
use crate::cli::{render, Ctx, Finish};
use crate::format::repo_config::Encryption;
use crate::repo::InitOptions;

pub(in crate::cli) fn run(ctx: &Ctx, a: &InitArgs) -> Result<Finish> {
    let path = ctx.repo_path()?;
    let encryption = if a.encryption == "none" { Encryption::None } else { Encryption::XChaCha20Poly1305 };
    let opts = InitOptions {
        encryption,
        compression_level: a.compression_level,
        pack_size: a.pack_size_mib << 20,
        kdf: ctx.kdf()?,
    };
    let pw = match encryption {
        Encryption::None => None,
        Encryption::XChaCha20Poly1305 => Some(ctx.with_passwords(|p| p.for_new_repository())?),
    };
    let config = crate::repo::init(&path, &opts, pw.as_ref().map(|p| p.as_slice()))?;
    // The config's state outside the repository learns of it, so that `backup` reports it gone
    // if it goes missing rather than creating another in its place.
    if let (Ok(Some(cfg)), None) = (ctx.config(), &ctx.cli.remote) {
        if let Some(s) = crate::lifecycle::outside::state_for(cfg) {
            let now = crate::lifecycle::clock::Clock::now(&crate::lifecycle::clock::SystemClock).to_rfc3339();
            if let Err(e) = s.remember(&path, &config.id.to_hex(), &now, true) {
                tracing::warn!("state kept outside the repository: {e}");
            }
        }
    }
    if ctx.json() {
        render::print_json(&json!({"repository": path, "id": config.id.to_hex(), "encryption": config.encryption}));
    } else if !ctx.quiet() {
        println!("created repository {} at {}", config.id.short(), path.display());
        match encryption {
            Encryption::XChaCha20Poly1305 => println!(
                "encrypted: keep the password safe. Without it nothing in this repository can be read, by you or anyone."
            ),
            Encryption::None => println!("NOT encrypted: anyone who can read the repository can read your data."),
        }
    }
    Ok(Finish::Ok)
}
