//! What the double sells: the zones of `scaleway.md` and the server types
//! with the prices it records (fr-par-1, 2025-09), plus a cheap DEV1-S.

use serde_json::{Value, json};

pub const ZONES: &[&str] = &[
    "fr-par-1", "fr-par-2", "fr-par-3", "nl-ams-1", "nl-ams-2", "nl-ams-3", "pl-waw-1", "pl-waw-2",
    "pl-waw-3", "it-mil-1",
];

pub const GB: u64 = 1_000_000_000;

/// The zone a path names, legacy names (`par1`, `ams1`) mapped.
pub fn zone(name: &str) -> Option<&'static str> {
    let name = match name {
        "par1" => "fr-par-1",
        "ams1" => "nl-ams-1",
        other => other,
    };
    ZONES.iter().copied().find(|z| *z == name)
}

/// `fr-par-1` → `fr-par`.
pub fn region(zone: &str) -> &str {
    zone.rsplit_once('-').map_or(zone, |(region, _)| region)
}

pub struct Product {
    pub name: &'static str,
    pub ncpus: u64,
    pub ram_gb: u64,
    pub hourly_price: f64,
    /// Most local SSD (`l_ssd`) in GB; 0 when the type has none (POP2, PRO2:
    /// the root must be an `sbs_volume`).
    pub local_gb: u64,
    /// Internet bandwidth, bit/s.
    pub bandwidth: u64,
}

pub const PRODUCTS: &[Product] = &[
    Product {
        name: "DEV1-S",
        ncpus: 2,
        ram_gb: 2,
        hourly_price: 0.0088,
        local_gb: 20,
        bandwidth: 200_000_000,
    },
    Product {
        name: "GP1-S",
        ncpus: 8,
        ram_gb: 32,
        hourly_price: 0.2042,
        local_gb: 300,
        bandwidth: 800_000_000,
    },
    Product {
        name: "POP2-HC-8C-16G",
        ncpus: 8,
        ram_gb: 16,
        hourly_price: 0.2128,
        local_gb: 0,
        bandwidth: 1_600_000_000,
    },
    Product {
        name: "POP2-HC-16C-32G",
        ncpus: 16,
        ram_gb: 32,
        hourly_price: 0.4256,
        local_gb: 0,
        bandwidth: 3_200_000_000,
    },
    Product {
        name: "POP2-HC-32C-64G",
        ncpus: 32,
        ram_gb: 64,
        hourly_price: 0.8512,
        local_gb: 0,
        bandwidth: 6_400_000_000,
    },
];

pub fn product(name: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.name == name)
}

impl Product {
    pub fn json(&self) -> Value {
        let local = self.local_gb * GB;
        json!({
            "alt_names": [],
            "arch": "x86_64",
            "ncpus": self.ncpus,
            "ram": self.ram_gb * 1024 * 1024 * 1024,
            "gpu": 0,
            "hourly_price": self.hourly_price,
            "monthly_price": (self.hourly_price * 730.0 * 100.0).round() / 100.0,
            "volumes_constraint": {"min_size": 0, "max_size": local},
            "per_volume_constraint": {"l_ssd": {"min_size": if local > 0 { GB } else { 0 }, "max_size": local}},
            // As recorded (terraform-provider-scaleway b2d45ed4,
            // server-root-volume-from-image-block cassette, products/servers).
            "gpu_info": null,
            "mig_profile": null,
            "scratch_storage_max_size": null,
            "scratch_storage_max_volumes_count": 0,
            "capabilities": {
                "boot_types": ["local", "rescue"],
                "placement_groups": true,
                "block_storage": true,
                "hot_snapshots_local_volume": local > 0,
                "private_network": 8,
                "max_file_systems": 0,
            },
            "end_of_service": false,
            "network": {
                "sum_internal_bandwidth": self.bandwidth,
                "sum_internet_bandwidth": self.bandwidth,
                "ipv6_support": true,
                "interfaces": [{"internal_bandwidth": self.bandwidth, "internet_bandwidth": self.bandwidth}],
            },
            "block_bandwidth": self.bandwidth,
        })
    }
}
