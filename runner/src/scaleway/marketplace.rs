//! Marketplace v2 (global, `/marketplace/v2`): which image UUID a label such
//! as `debian_bookworm` means in a zone, for a commercial type.

use serde::Deserialize;

use super::client::Client;
use super::error::ScwError;
use super::zone::Zone;

/// The local image type for servers whose root volume is an `sbs_volume`.
const SBS_TYPE: &str = "instance_sbs";

#[derive(Debug, Deserialize)]
struct LocalImage {
    id: String,
    #[serde(default)]
    compatible_commercial_types: Vec<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LocalImages {
    #[serde(default)]
    local_images: Vec<LocalImage>,
}

impl Client {
    /// The id of the first `instance_sbs` local image of `label` in `zone`
    /// compatible with `commercial_type`.
    pub async fn marketplace_image(
        &self,
        zone: &Zone,
        label: &str,
        commercial_type: &str,
    ) -> Result<String, ScwError> {
        let query = [
            ("image_label", label.to_string()),
            ("zone", zone.to_string()),
            ("type", SBS_TYPE.to_string()),
        ];
        let list: LocalImages = self
            .get_json("/marketplace/v2/local-images", &query)
            .await?;
        list.local_images
            .into_iter()
            .find(|i| {
                i.kind.as_deref().is_none_or(|k| k == SBS_TYPE)
                    && i.compatible_commercial_types
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case(commercial_type))
            })
            .map(|i| i.id)
            .ok_or_else(|| ScwError::NoMarketplaceImage {
                label: label.to_string(),
                zone: zone.to_string(),
                commercial_type: commercial_type.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::mock::{Mock, Reply};
    use super::*;
    use crate::secret::Secret;

    #[tokio::test]
    async fn picks_first_compatible_sbs_image() {
        let body = r#"{"local_images":[
            {"id":"l-ssd","compatible_commercial_types":["POP2-HC-16C-32G"],"type":"instance_local"},
            {"id":"dev","compatible_commercial_types":["DEV1-S"],"type":"instance_sbs"},
            {"id":"pop2","compatible_commercial_types":["DEV1-S","POP2-HC-16C-32G"],"type":"instance_sbs"},
            {"id":"later","compatible_commercial_types":["POP2-HC-16C-32G"],"type":"instance_sbs"}
        ],"total_count":4}"#;
        let mock = Mock::start(vec![Reply::json(200, body)]).await;
        let c = Client::new(&mock.url, Secret::new("k")).unwrap();
        let zone: Zone = "fr-par-2".parse().unwrap();
        let id = c
            .marketplace_image(&zone, "debian_bookworm", "POP2-HC-16C-32G")
            .await
            .unwrap();
        assert_eq!(id, "pop2");
        let seen = &mock.seen()[0];
        assert_eq!(seen.path, "/marketplace/v2/local-images");
        assert_eq!(
            seen.query,
            "image_label=debian_bookworm&zone=fr-par-2&type=instance_sbs"
        );
    }

    #[tokio::test]
    async fn none_compatible_is_a_clear_error() {
        let body = r#"{"local_images":[{"id":"dev","compatible_commercial_types":["DEV1-S"],"type":"instance_sbs"}]}"#;
        let mock = Mock::start(vec![Reply::json(200, body)]).await;
        let c = Client::new(&mock.url, Secret::new("k")).unwrap();
        let zone: Zone = "nl-ams-1".parse().unwrap();
        let e = c
            .marketplace_image(&zone, "debian_bookworm", "POP2-HC-16C-32G")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the Scaleway Marketplace has no image \"debian_bookworm\" of type instance_sbs in \
             nl-ams-1 compatible with POP2-HC-16C-32G"
        );
    }
}
