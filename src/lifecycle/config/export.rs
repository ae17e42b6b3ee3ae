//! The `export` section: an export `backup` writes after its backups.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Archive layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `NAME_backup_TYPE_TIME.ext` files side by side.
    Flat,
    /// `YYYYMMDD/` directories with `backup_metadata.json`.
    Dated,
}

/// `"export": {"layout": "dated", "out": "/srv/backup"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Layout.
    pub layout: Layout,
    /// Output directory (relative: to the config file's directory).
    pub out: PathBuf,
}

impl ExportConfig {
    /// Makes `out` absolute and checks it; errors are (key relative to the section, message).
    pub(super) fn resolve(
        &mut self,
        abs: &dyn Fn(&Path) -> PathBuf,
        repository: &Path,
    ) -> std::result::Result<(), (String, String)> {
        if self.out.as_os_str().is_empty() {
            return Err(("out".into(), "empty path".into()));
        }
        // Lexically: `out` need not exist yet, and "../backup" must compare as the place it names.
        self.out = abs(&self.out).components().fold(PathBuf::new(), |mut p, c| {
            match c {
                Component::ParentDir => {
                    p.pop();
                }
                Component::CurDir => {}
                c => p.push(c),
            }
            p
        });
        // Exported files inside the repository would be foreign files there, and the repository
        // inside `out` would be walked as exports: keep them apart.
        if self.out.starts_with(repository) || repository.starts_with(&self.out) {
            return Err((
                "out".into(),
                format!(
                    "{} and the repository {} must not contain one another",
                    self.out.display(),
                    repository.display()
                ),
            ));
        }
        Ok(())
    }
}
