//! A Plex Media Server double and a plex.tv double, run as the
//! `plex-double` binary by tests, the demo and a local VM in place of real
//! Plex.
//!
//! The PMS double is as strict as real Plex is documented to be
//! (`shared/reference/plex.md`): it scans real files on disk with a header
//! read that can time out, and a scan that cannot read a known file marks
//! or purges its rows exactly as Plex does, so a degraded mount reproduces
//! the real catastrophe. A double that accepted anything would prove
//! nothing about the runner.
//!
//! Layout: `cli` (flags), `faults` (fault specs), `render` (XML/JSON),
//! `web` (query, errors, tokens), `ids` (random ids, clock), `pms` (the
//! server), `plextv` (the plex.tv double), `harness` (starting both from
//! tests), `container` (the double as the pms-docker image's `/init`),
//! `sqlite_shell` (the image's `Plex SQLite`).

pub mod cli;
pub mod container;
pub mod faults;
pub mod harness;
pub mod ids;
pub mod plextv;
pub mod pms;
pub mod render;
pub mod sqlite_shell;
pub mod web;
