//! Identity, the plex.tv account and claiming.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};

use super::{Shared, ok};
use crate::plexdouble::pms::plextv_client::ClaimError;
use crate::plexdouble::render::{Element, Format};
use crate::plexdouble::web::{ApiError, ApiResult, Params};

pub async fn identity(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let claimed = state.online_token().is_some();
    let container = Element::new("MediaContainer")
        .attr("size", 0_i64)
        .attr("claimed", claimed)
        .attr("machineIdentifier", state.machine_identifier())
        .attr("version", state.config.version.as_str());
    Ok(Format::of(&headers).reply(&container))
}

/// Plex answers with a `MyPlex` root element.
pub async fn account(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let format = Format::of(&headers);
    let Some(token) = state.online_token() else {
        let element = Element::new("MyPlex")
            .attr("mappingState", "unknown")
            .attr("signInState", "none")
            .attr("subscriptionActive", false)
            .attr("subscriptionState", "Unknown")
            .attr("username", "");
        return Ok(format.reply(&element));
    };
    let username = state
        .prefs()
        .get("PlexOnlineUsername")
        .unwrap_or_default()
        .to_string();
    state.log.info(
        state
            .plextv
            .requesting("GET", "/api/v2/user", "X-Plex-Token", &token),
    );
    let element = match state.plextv.account(&token).await {
        Ok(account) => Element::new("MyPlex")
            .attr("mappingState", "mapped")
            .attr("signInState", "ok")
            .attr("subscriptionActive", account.subscription_active)
            .attr("subscriptionState", account.subscription_status)
            .attr("username", account.username),
        Err(error) => {
            state.log.warn(format!(
                "MyPlex: cannot refresh the account from plex.tv: {error:#}"
            ));
            Element::new("MyPlex")
                .attr("mappingState", "unknown")
                .attr("signInState", "ok")
                .attr("subscriptionActive", false)
                .attr("subscriptionState", "Unknown")
                .attr("username", username)
        }
    };
    Ok(format.reply(&element))
}

/// `POST /myplex/claim?token=claim-...`: exchanges the claim token with
/// plex.tv; the server's token lands in Preferences.xml only after
/// `--claim-delay` (lessons.md rule 9).
pub async fn claim(State(state): State<Shared>, RawQuery(query): RawQuery) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let claim_token = params.require("token")?.to_string();
    if !claim_token.starts_with("claim-") {
        return Err(ApiError::bad_request(
            "token is not a claim token (claim-...)",
        ));
    }
    if state.online_token().is_some() {
        return Err(ApiError::bad_request("server is already claimed"));
    }
    if state.claim_pending.swap(true, Ordering::SeqCst) {
        return Err(ApiError::bad_request("a claim is already in progress"));
    }
    let machine_id = state.machine_identifier();
    state.log.info(
        state
            .plextv
            .requesting("POST", "/api/claim/exchange", "token", &claim_token),
    );
    let claimed = match state.plextv.exchange(&claim_token, &machine_id).await {
        Ok(claimed) => claimed,
        Err(error) => {
            state.claim_pending.store(false, Ordering::SeqCst);
            let (status, message) = match error {
                ClaimError::Rejected { status, message } => (
                    StatusCode::from_u16(status)
                        .ok()
                        .filter(StatusCode::is_client_error)
                        .unwrap_or(StatusCode::BAD_REQUEST),
                    format!("plex.tv rejected the claim token ({status}): {message}"),
                ),
                ClaimError::Failed(message) => (StatusCode::BAD_GATEWAY, message),
            };
            state.log.warn(format!("MyPlex: claim failed: {message}"));
            return Err(ApiError::new(status, message));
        }
    };
    state.log.info(format!(
        "MyPlex: claim accepted for {}; the token is stored in {}",
        claimed.username,
        humantime::format_duration(state.config.claim_delay)
    ));
    let delayed = Arc::clone(&state);
    tokio::spawn(async move {
        tokio::time::sleep(delayed.config.claim_delay).await;
        let saved = {
            let mut prefs = delayed.prefs();
            prefs.set("PlexOnlineToken", claimed.token);
            prefs.set("PlexOnlineUsername", claimed.username);
            prefs.save()
        };
        match saved {
            Ok(()) => delayed
                .log
                .info("MyPlex: server claimed: PlexOnlineToken written to Preferences.xml"),
            Err(error) => delayed
                .log
                .error(format!("MyPlex: cannot save the claim: {error:#}")),
        }
        delayed.claim_pending.store(false, Ordering::SeqCst);
    });
    ok()
}

/// `DELETE /myplex/account`: signs the server out of plex.tv.
pub async fn unclaim(State(state): State<Shared>) -> ApiResult {
    {
        let mut prefs = state.prefs();
        prefs.remove("PlexOnlineToken");
        prefs.remove("PlexOnlineUsername");
        prefs.save()?;
    }
    state
        .log
        .info("MyPlex: server unclaimed: PlexOnlineToken removed");
    ok()
}
