//! Identity, the plex.tv account and claiming.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};

use super::Shared;
use crate::plexdouble::pms::plextv_client::{Account, ClaimError};
use crate::plexdouble::render::{Element, Format};
use crate::plexdouble::web::{ApiError, ApiResult, Params, request_token};

pub async fn identity(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let claimed = state.online_token().is_some();
    let container = Element::new("MediaContainer")
        .attr("size", 0_i64)
        .attr("claimed", claimed)
        .attr("machineIdentifier", state.machine_identifier())
        .attr("version", state.config.version.as_str());
    Ok(Format::of(&headers).reply(&container))
}

/// The `MyPlex` root element Plex answers `/myplex/account`, the claim and
/// the unclaim with; its attributes are those python-plexapi's
/// `server.Account` reads (pkkid/python-plexapi a8d051f, plexapi/server.py).
/// `username` is the account's email (its tests/test_server.py checks
/// `myPlexUsername` against an email pattern) and `authToken` the
/// server's own token.
fn my_plex(signed_in: Option<SignedIn>) -> Element {
    let Some(s) = signed_in else {
        return Element::new("MyPlex")
            .attr("mappingState", "unknown")
            .attr("signInState", "none")
            .attr("subscriptionActive", false)
            .attr("subscriptionState", "Unknown")
            .attr("username", "");
    };
    Element::new("MyPlex")
        .attr("authToken", s.token)
        .attr("mappingState", s.mapping_state)
        .attr("signInState", "ok")
        .attr("subscriptionActive", s.subscription_active)
        .attr("subscriptionState", s.subscription_state)
        .attr("username", s.username)
}

struct SignedIn {
    token: String,
    username: String,
    mapping_state: &'static str,
    subscription_active: bool,
    subscription_state: String,
}

impl SignedIn {
    fn new(token: String, account: Account, mapping_state: &'static str) -> SignedIn {
        SignedIn {
            token,
            username: account.email,
            mapping_state,
            subscription_active: account.subscription_active,
            subscription_state: account.subscription_status,
        }
    }
}

pub async fn account(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let format = Format::of(&headers);
    let Some(token) = state.online_token() else {
        return Ok(format.reply(&my_plex(None)));
    };
    state.log.info(
        state
            .plextv
            .requesting("GET", "/api/v2/user", "X-Plex-Token", &token),
    );
    let signed_in = match state.plextv.account(&token).await {
        Ok(account) => SignedIn::new(token, account, "mapped"),
        Err(error) => {
            state.log.warn(format!(
                "MyPlex: cannot refresh the account from plex.tv: {error:#}"
            ));
            let username = state
                .prefs()
                .get("PlexOnlineUsername")
                .unwrap_or_default()
                .to_string();
            SignedIn {
                token,
                username,
                mapping_state: "unknown",
                subscription_active: false,
                subscription_state: "Unknown".into(),
            }
        }
    };
    Ok(format.reply(&my_plex(Some(signed_in))))
}

/// `POST /myplex/claim?token=claim-...`, sent as python-plexapi's
/// `PlexServer.claim(account)` sends it: with the account's
/// `X-Plex-Token`. Exchanges the claim token with plex.tv and answers the
/// signed-in `MyPlex` element; the server's token lands in Preferences.xml
/// only after `--claim-delay` (lessons.md rule 9).
pub async fn claim(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
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
    let Some(account_token) = request_token(&headers, &params) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "claiming needs the plex.tv account's X-Plex-Token",
        ));
    };
    let account = state
        .plextv
        .account(&account_token)
        .await
        .map_err(|error| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("plex.tv does not know the X-Plex-Token: {error:#}"),
            )
        })?;
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
    let answer = my_plex(Some(SignedIn::new(
        claimed.token.clone(),
        account,
        // Mapping (remote access) is decided later.
        "unknown",
    )));
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
    Ok(Format::of(&headers).reply(&answer))
}

/// `DELETE /myplex/account`: signs the server out of plex.tv; answers the
/// signed-out `MyPlex` element.
pub async fn unclaim(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    {
        let mut prefs = state.prefs();
        prefs.remove("PlexOnlineToken");
        prefs.remove("PlexOnlineUsername");
        prefs.save()?;
    }
    state
        .log
        .info("MyPlex: server unclaimed: PlexOnlineToken removed");
    Ok(Format::of(&headers).reply(&my_plex(None)))
}
