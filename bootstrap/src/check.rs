//! `bootstrap check`: the configuration is valid; here is what a launch
//! would send (the run.toml, without secrets) and where home is.

use anyhow::Result;

use crate::config::{BootstrapConfig, RunParams};

pub fn check(cfg: &BootstrapConfig) -> Result<()> {
    let params = RunParams {
        run_id: "<run-id>".into(),
        plex_version: cfg.run_settings().plex_version().to_string(),
        reference: None,
        zone: cfg.scaleway.zone.clone(),
        api_url: cfg.scaleway.api_url.clone(),
        metadata_url: cfg.scaleway.metadata_url.clone(),
        keep_on_failure: cfg.scaleway.keep_on_failure,
    };
    println!("bootstrap.toml is valid.");
    println!(
        "scaleway: {} in {}, project {}; bucket s3://{}",
        cfg.scaleway.commercial_type,
        cfg.scaleway.zone,
        cfg.scaleway.project_id,
        cfg.bucket()
    );
    println!(
        "home Plex: {:?}, controlled by {:?}",
        cfg.home.layout, cfg.home.control
    );
    println!("\nA run's run.toml (run id, reference and Plex version filled in at launch):\n");
    print!("{}", crate::config::compose_preview(cfg, &params));
    Ok(())
}
