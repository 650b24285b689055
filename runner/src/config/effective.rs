//! The effective configuration: the validated config written back as the
//! `run.toml` a user would write to get it, every default explicit and every
//! inline secret replaced by [`Secret::MASK`]. Secrets from the environment
//! or a file show as the variable names and the file path they came from.

use super::RunConfig;
use super::credentials::CredentialSource;
use super::raw::*;
use super::sections::*;
use crate::secret::Secret;

pub(super) fn to_toml(cfg: &RunConfig) -> String {
    // Every value in RawConfig is a string, number, bool, array or table:
    // serialization cannot fail.
    toml::to_string(&to_raw(cfg))
        .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
}

fn to_raw(cfg: &RunConfig) -> RawConfig {
    let (mode, reference, library) = match &cfg.mode {
        Mode::Delta { reference } => (
            RawMode::Delta,
            Some(RawReference {
                archive_key: reference.archive_key.to_string(),
                manifest_key: reference.manifest_key.as_ref().map(ToString::to_string),
            }),
            Vec::new(),
        ),
        Mode::Scratch { libraries } => (
            RawMode::Scratch,
            None,
            libraries.iter().map(library).collect(),
        ),
    };
    let s3 = &cfg.s3;
    let c = secret_keys(&s3.connection.credential_source, 2);
    RawConfig {
        run_id: cfg.run_id.to_string(),
        work_dir: cfg.work_dir.to_string(),
        mode,
        s3: RawS3 {
            endpoint: s3.connection.endpoint.as_ref().map(ToString::to_string),
            region: s3.connection.region.to_string(),
            bucket: s3.bucket.to_string(),
            path_style: Some(s3.connection.path_style),
            runs_prefix: Some(s3.runs_prefix.to_string()),
            reference_prefix: Some(s3.reference_prefix.to_string()),
            access_key: c.inline[0].clone(),
            secret_key: c.inline[1].clone(),
            access_key_env: c.env[0].clone(),
            secret_key_env: c.env[1].clone(),
            credentials_file: c.file,
        },
        reference,
        pull: RawPull {
            max_expanded_size: cfg.pull.max_expanded.map(exact_size),
            max_expansion_ratio: Some(cfg.pull.max_ratio),
        },
        library,
        media: media(&cfg.media),
        plex: plex(&cfg.plex),
        path_mapping: cfg
            .path_mappings
            .iter()
            .map(|m| RawPathMapping {
                from: m.from.to_string(),
                to: m.to.to_string(),
            })
            .collect(),
        phases: RawPhases {
            scan: Some(cfg.phases.scan),
            deep_scan: Some(cfg.phases.deep_scan),
            analysis: Some(cfg.phases.analysis),
            sonic: Some(cfg.phases.sonic),
            refresh_metadata: Some(cfg.phases.refresh_metadata),
        },
        deadlines: deadlines(&cfg.deadlines),
        guard: RawGuard {
            max_lost_items: Some(cfg.guard.max_lost_items),
            max_lost_fraction: Some(cfg.guard.max_lost_fraction),
        },
        termination: termination(&cfg.termination),
        wipe: RawWipe {
            files: cfg.wipe.files.iter().map(ToString::to_string).collect(),
            user_data_copies: cfg
                .wipe
                .user_data_copies
                .iter()
                .map(ToString::to_string)
                .collect(),
        },
        canary: cfg.canary.as_ref().map(|c| RawCanary {
            sonic_tracks: Some(c.sonic_tracks),
            folders: c.folders.iter().map(ToString::to_string).collect(),
        }),
        notify: cfg.notify_tables.clone(),
        cost: cfg.cost.as_ref().map(|c| RawCost {
            eur_per_hour: c.eur_per_hour,
            estimate_eur: c.estimate_eur,
            estimate_basis: c.estimate_basis.clone(),
        }),
    }
}

/// The raw credential keys of a section with `count` secrets.
struct RawSecrets {
    inline: Vec<Option<String>>,
    env: Vec<Option<String>>,
    file: Option<String>,
}

fn secret_keys(source: &CredentialSource, count: usize) -> RawSecrets {
    let none = || vec![None; count];
    let vars = |vars: &[String]| vars.iter().cloned().map(Some).collect();
    match source {
        CredentialSource::Inline => RawSecrets {
            inline: vec![Some(Secret::MASK.to_string()); count],
            env: none(),
            file: None,
        },
        CredentialSource::Env { vars: v } => RawSecrets {
            inline: none(),
            env: vars(v),
            file: None,
        },
        CredentialSource::File { path, vars: v } => RawSecrets {
            inline: none(),
            env: vars(v),
            file: Some(path.to_string()),
        },
    }
}

fn library(l: &Library) -> RawLibrary {
    RawLibrary {
        title: l.title.to_string(),
        kind: match l.kind {
            LibraryType::Movie => RawLibraryType::Movie,
            LibraryType::Show => RawLibraryType::Show,
            LibraryType::Artist => RawLibraryType::Artist,
            LibraryType::Photo => RawLibraryType::Photo,
        },
        agent: Some(l.agent.to_string()),
        scanner: Some(l.scanner.to_string()),
        language: l.language.to_string(),
        locations: l.locations.iter().map(ToString::to_string).collect(),
    }
}

fn media(m: &MediaSettings) -> RawMedia {
    let s3 = m.own_connection.then(|| {
        let c = secret_keys(&m.connection.credential_source, 2);
        RawConnection {
            endpoint: m.connection.endpoint.as_ref().map(ToString::to_string),
            region: m.connection.region.to_string(),
            path_style: Some(m.connection.path_style),
            access_key: c.inline[0].clone(),
            secret_key: c.inline[1].clone(),
            access_key_env: c.env[0].clone(),
            secret_key_env: c.env[1].clone(),
            credentials_file: c.file,
        }
    });
    RawMedia {
        remote: m.remote.to_string(),
        mount_point: m.mount_point.to_string(),
        profile: Some(match m.profile {
            RcloneProfile::Small => RawProfile::Small,
            RcloneProfile::Balanced => RawProfile::Balanced,
            RcloneProfile::Large => RawProfile::Large,
        }),
        anchor_samples: Some(m.anchor_samples),
        probe_timeout: Some(m.probe_timeout),
        health_interval: Some(m.health_interval),
        s3,
    }
}

fn plex(p: &PlexSettings) -> RawPlex {
    let (runtime, image) = match &p.runtime {
        PlexRuntime::Docker { image, .. } => (RawRuntime::Docker, Some(image.to_string())),
        PlexRuntime::Double { .. } => (RawRuntime::Double, None),
    };
    let token = p.claim.as_ref().map(|c| secret_keys(&c.source, 1));
    let (include, exclude) = match &p.libraries {
        LibraryFilter::All => (None, None),
        LibraryFilter::Include(names) => (Some(names.clone()), None),
        LibraryFilter::Exclude(names) => (None, Some(names.clone())),
    };
    RawPlex {
        version: p.version.to_string(),
        runtime: Some(runtime),
        image,
        claim: Some(p.claim.is_some()),
        account_token: token.as_ref().and_then(|t| t.inline[0].clone()),
        account_token_env: token.as_ref().and_then(|t| t.env[0].clone()),
        credentials_file: token.and_then(|t| t.file),
        forget_token_after_claim: p.claim.as_ref().map(|c| c.forget_after_claim),
        include_libraries: include,
        exclude_libraries: exclude,
        app_support_dir: Some(p.app_support_dir.to_string_lossy().into_owned()),
        port: Some(p.port),
        plextv_url: Some(p.plextv_url.to_string()),
        uid: p.uid,
        gid: p.gid,
        double_binary: match &p.runtime {
            PlexRuntime::Double { binary } => binary.as_ref().map(ToString::to_string),
            _ => None,
        },
        container_env: match &p.runtime {
            PlexRuntime::Docker { env, .. } if !env.is_empty() => Some(env.clone()),
            _ => None,
        },
    }
}

fn deadlines(d: &Deadlines) -> RawDeadlines {
    RawDeadlines {
        run: Some(d.run),
        pull: Some(d.pull),
        plex_ready: Some(d.plex_ready),
        plex_startup: Some(d.plex_startup),
        scan: Some(d.scan),
        scan_per_type: RawScanPerType {
            movie: Some(d.scan_per_type.movie),
            show: Some(d.scan_per_type.show),
            artist: Some(d.scan_per_type.artist),
            photo: Some(d.scan_per_type.photo),
        },
        analysis: Some(d.analysis),
        refresh_metadata: Some(d.refresh_metadata),
        sonic: Some(d.sonic),
        upload: Some(d.upload),
        stall_interval: Some(d.stall_interval),
        stall_checks: Some(d.stall_checks),
        poll_interval: Some(d.poll_interval),
        idle_checks: Some(d.idle_checks),
        snapshot_interval: Some(d.snapshot_interval),
        watchdog: Some(d.watchdog),
    }
}

fn termination(t: &Termination) -> RawTermination {
    match t {
        Termination::None => RawTermination {
            provider: RawProvider::None,
            keep_on_failure: None,
            dead_man_grace: None,
            zone: None,
            api_url: None,
            metadata_url: None,
            secret_key: None,
            secret_key_env: None,
            credentials_file: None,
        },
        Termination::Scaleway(s) => {
            let c = secret_keys(&s.source, 1);
            RawTermination {
                provider: RawProvider::Scaleway,
                keep_on_failure: Some(s.keep_on_failure),
                dead_man_grace: Some(s.dead_man_grace),
                zone: Some(s.zone.to_string()),
                api_url: Some(s.api_url.to_string()),
                metadata_url: Some(s.metadata_url.to_string()),
                secret_key: c.inline[0].clone(),
                secret_key_env: c.env[0].clone(),
                credentials_file: c.file,
            }
        }
    }
}

/// A size that reads back as exactly the same number of bytes.
fn exact_size(bytes: u64) -> String {
    match bytes {
        b if b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => b.to_string(),
    }
}
