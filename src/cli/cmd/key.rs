//! `key list|add|remove|passwd`: the key files that unlock an encrypted repository.

use anyhow::Result;

use crate::cli::args::KeyCmd;
use crate::cli::{render, Ctx, Finish};

pub(in crate::cli) fn run(ctx: &Ctx, cmd: &KeyCmd) -> Result<Finish> {
    let path = ctx.repo_path()?;
    let pw = || ctx.password();
    match cmd {
        KeyCmd::List => {
            let keys = crate::ops::keys::list(&path, &pw)?;
            if ctx.json() {
                render::print_json(&serde_json::to_value(&keys)?);
            } else {
                for k in keys {
                    println!(
                        "{}{} {} {} {}",
                        if k.current { "*" } else { " " },
                        k.id.get(..16).unwrap_or(&k.id),
                        k.created,
                        k.host,
                        k.label
                    );
                }
            }
        }
        KeyCmd::Add { label, new_password_file } => {
            let np = ctx.with_passwords(|p| p.new_password(new_password_file.as_deref()))?;
            let id = crate::ops::keys::add(&path, &pw, &np, label, ctx.kdf()?)?;
            println!("added key {}", id.get(..16).unwrap_or(&id));
        }
        KeyCmd::Remove { id } => {
            let id = crate::ops::keys::remove(&path, &pw, id)?;
            println!("removed key {}", id.get(..16).unwrap_or(&id));
        }
        KeyCmd::Passwd { new_password_file } => {
            let np = ctx.with_passwords(|p| p.new_password(new_password_file.as_deref()))?;
            let id = crate::ops::keys::passwd(&path, &pw, &np, ctx.kdf()?)?;
            println!("password changed (new key {})", id.get(..16).unwrap_or(&id));
        }
    }
    Ok(Finish::Ok)
}
