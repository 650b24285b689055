//! What the operator reads after an install or a dry run.

use std::fmt;

use runner::plexdb::RemapReport;
use runner::plexdb::watchstate::WatchStateReport;

use super::install::InstallReport;
use super::preview::InstallPreview;

fn watch_state(f: &mut fmt::Formatter<'_>, w: &WatchStateReport) -> fmt::Result {
    writeln!(
        f,
        "watch state since the snapshot: {} settings updated, {} added ({} already there, {} newer in the result kept); {} history rows added ({} already there); {} accounts and {} devices added; {} items not in the result (kept by guid)",
        w.settings_updated,
        w.settings_inserted,
        w.settings_unchanged,
        w.settings_kept_newer,
        w.views_inserted,
        w.views_present,
        w.accounts_added,
        w.devices_added,
        w.guids_not_found
    )
}

fn remap(f: &mut fmt::Formatter<'_>, r: &Option<RemapReport>) -> fmt::Result {
    match r {
        None => writeln!(f, "paths: the same at home and in the cloud, no remap"),
        Some(r) => {
            for m in &r.mappings {
                writeln!(f, "paths {} -> {}: {} rows", m.from, m.to, m.total)?;
            }
            Ok(())
        }
    }
}

impl fmt::Display for InstallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "installed; the previous DB is backed up in {}",
            self.backup.display()
        )?;
        for old in &self.pruned {
            writeln!(f, "removed the old backup {}", old.display())?;
        }
        if self.dated_backups_kept.files > 0 {
            writeln!(f, "kept in place, not copied: {}", self.dated_backups_kept)?;
        }
        watch_state(f, &self.watch_state)?;
        remap(f, &self.remap)?;
        writeln!(f, "integrity: {}", self.integrity)?;
        writeln!(
            f,
            "Plex {} answers; {} counts match the result's",
            self.plex_version,
            self.counts_checked.len()
        )?;
        let total: std::time::Duration = self.durations.iter().map(|d| d.took).sum();
        write!(
            f,
            "took {}",
            humantime::format_duration(std::time::Duration::from_secs(total.as_secs()))
        )
    }
}

impl fmt::Display for InstallPreview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        watch_state(f, &self.watch_state)?;
        remap(f, &self.remap)?;
        for c in self.counts.iter().filter(|c| c.now != c.after) {
            writeln!(
                f,
                "{} {}: {} now, {} after",
                c.library, c.type_name, c.now, c.after
            )?;
        }
        let same = self.counts.iter().filter(|c| c.now == c.after).count();
        writeln!(f, "{same} other library counts unchanged")?;
        write!(
            f,
            "free space on {}: {:.1} MiB needed (of which {:.1} MiB stay free), {:.1} MiB available",
            self.space.filesystem,
            self.space.needed as f64 / (1 << 20) as f64,
            self.space.margin as f64 / (1 << 20) as f64,
            self.space.available as f64 / (1 << 20) as f64
        )
    }
}
