//! `bootstrap check`: the configuration is valid; here is what a launch
//! would send (the run.toml, without secrets) and where home is.

use anyhow::Result;

use crate::config::{BootstrapConfig, HomeControl, HomeLayoutKind, RunParams};

pub fn check(cfg: &BootstrapConfig) -> Result<()> {
    let params = RunParams {
        run_id: "<run-id>".into(),
        plex_version: match cfg.run_settings().plex_version().to_string() {
            v if v == crate::config::PROBE_PLEX_VERSION => "<the reference's>".into(),
            v => v,
        },
        reference: None,
        zone: cfg.scaleway.zone.clone(),
        api_url: cfg.scaleway.api_url.clone(),
        metadata_url: cfg.scaleway.metadata_url.clone(),
        keep_on_failure: cfg.scaleway.keep_on_failure,
        dead_man_grace: cfg.scaleway.dead_man_grace,
        canary: None,
        cost: None,
    };
    println!("bootstrap.toml is valid.");
    println!(
        "scaleway: {} in {}, project {}; bucket s3://{}",
        cfg.scaleway.commercial_type,
        cfg.scaleway.zone,
        cfg.scaleway.project_id,
        cfg.bucket()
    );
    let layout = match &cfg.home.layout {
        HomeLayoutKind::Native => "native package".to_owned(),
        HomeLayoutKind::Docker { config_dir } => {
            format!("docker, /config at {}", config_dir.display())
        }
        HomeLayoutKind::Custom { app_support_dir } => app_support_dir.display().to_string(),
    };
    let control = match &cfg.home.control {
        HomeControl::Docker { container } => format!("docker container {container:?}"),
        HomeControl::Systemd { unit } => format!("systemd unit {unit:?}"),
        HomeControl::Command { stop, start } => format!("{stop:?} / {start:?}"),
    };
    println!(
        "home Plex: {layout}; stopped and started with {control}; answers at {}",
        cfg.home.url
    );
    println!("\nA run's run.toml (run id, reference and Plex version filled in at launch):\n");
    print!("{}", crate::config::compose_preview(cfg, &params));
    Ok(())
}
