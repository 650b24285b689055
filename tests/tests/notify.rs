//! Notifications against local receivers that check each target's real
//! request shape (`notifyreceiver`): every kind delivered as its service
//! documents it, a failing target retried and given up, a hanging one
//! bounded, a rate-limited one retried after its `Retry-After`, and no
//! secret in any outcome.

use std::time::Duration;

use plex_burst_tests::notifyreceiver::{GOTIFY_TOKEN, NTFY_TOKEN, Receiver, TEM_KEY};
use runner::notify::{Event, EventKind, Notifier, RawTarget, Retry, targets};

const DISCORD_PATH: &str = "/discord/api/webhooks/112233445566778899/discord-secret-token";
const SLACK_PATH: &str = "/slack/services/T0001/B0002/slack-secret-part";

/// `[[notify]]` tables as a user writes them, and the environment that
/// holds their secrets.
fn tables(receiver: &Receiver) -> (Vec<RawTarget>, impl Fn(&str) -> Option<String>) {
    let toml = format!(
        r#"
[[notify]]
kind = "webhook"
url = "{webhook}"

[[notify]]
kind = "ntfy"
url = "{ntfy}"
token_env = "NTFY_TOKEN"

[[notify]]
kind = "discord"
url_env = "DISCORD_URL"

[[notify]]
kind = "slack"
url_env = "SLACK_URL"

[[notify]]
kind = "gotify"
url = "{gotify}"
token_env = "GOTIFY_TOKEN"

[[notify]]
kind = "email"
url = "{tem}"
token_env = "TEM_KEY"
from = "runs@plex-burst.example"
to = ["me@example.com", "partner@example.com"]
project_id = "11111111-2222-4333-8444-555555555555"
region = "nl-ams"
"#,
        webhook = receiver.url("/webhook/plex-burst"),
        ntfy = receiver.url("/ntfy/private-plexburst"),
        gotify = receiver.url("/gotify"),
        tem = receiver.url("/tem"),
    );
    #[derive(serde::Deserialize)]
    struct Doc {
        notify: Vec<RawTarget>,
    }
    let doc: Doc = toml::from_str(&toml).unwrap();
    let env = {
        let discord = receiver.url(DISCORD_PATH);
        let slack = receiver.url(SLACK_PATH);
        move |var: &str| match var {
            "NTFY_TOKEN" => Some(NTFY_TOKEN.to_string()),
            "DISCORD_URL" => Some(discord.clone()),
            "SLACK_URL" => Some(slack.clone()),
            "GOTIFY_TOKEN" => Some(GOTIFY_TOKEN.to_string()),
            "TEM_KEY" => Some(TEM_KEY.to_string()),
            _ => None,
        }
    };
    (doc.notify, env)
}

fn done_event() -> Event {
    Event::new(
        EventKind::Done,
        Some("20261203-1830"),
        "done",
        "The run is done and its result uploaded. 41.2 h; tracks 456534 -> 456564.".into(),
    )
    .next("bootstrap fetch 20261203-1830")
    .link(Some(
        "https://bucket.example/runs/20261203-1830/report.html".into(),
    ))
    .details(serde_json::json!({ "hours": 41.2 }))
    .sender("runner")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn every_target_gets_the_request_its_service_documents() {
    let receiver = Receiver::start();
    let (raw, env) = tables(&receiver);
    let notifier = Notifier::new(targets(&raw, &env).unwrap(), Retry::default());
    let event = done_event();
    let deliveries = runtime().block_on(notifier.send(&event));
    for d in &deliveries {
        assert_eq!(d.outcome, Ok(()), "{}", d.target);
        assert_eq!(d.attempts, 1, "{}", d.target);
    }
    assert_eq!(deliveries.len(), 6);
    let got = receiver.received();
    let by = |service: &str| {
        got.iter()
            .find(|r| r.service == service)
            .unwrap_or_else(|| panic!("nothing reached the {service} receiver"))
    };

    let webhook = by("webhook");
    assert_eq!(webhook.status, 200);
    let sent: Event = serde_json::from_slice(&webhook.body).unwrap();
    assert_eq!(sent, event, "the webhook gets the event itself");
    assert_eq!(webhook.json()["schema"], "plex-burst.notification.v1");
    assert_eq!(webhook.json()["event"], "done");

    let ntfy = by("ntfy");
    assert_eq!(ntfy.status, 200, "{}", ntfy.text());
    assert_eq!(
        ntfy.header("title"),
        Some("plex-burst run 20261203-1830: done")
    );
    assert_eq!(ntfy.header("priority"), Some("3"));
    assert_eq!(ntfy.header("click"), event.link.as_deref());
    assert_eq!(
        ntfy.text(),
        format!("{}\nNext: bootstrap fetch 20261203-1830", event.message)
    );

    let discord = by("discord");
    assert_eq!(discord.status, 204, "{}", discord.text());
    let body = discord.json();
    assert_eq!(body["embeds"][0]["title"], event.title);
    assert!(
        body["embeds"][0]["description"]
            .as_str()
            .unwrap()
            .contains("Next: bootstrap fetch")
    );
    assert_eq!(body["embeds"][0]["url"], event.link.clone().unwrap());
    assert_eq!(
        body["allowed_mentions"]["parse"],
        serde_json::json!([]),
        "no @everyone from a run"
    );

    let slack = by("slack");
    assert_eq!((slack.status, slack.path.as_str()), (200, SLACK_PATH));
    assert!(
        slack.json()["text"]
            .as_str()
            .unwrap()
            .starts_with("*plex-burst run 20261203-1830: done*\n")
    );

    let gotify = by("gotify");
    assert_eq!(gotify.status, 200, "{}", gotify.text());
    assert_eq!(gotify.header("x-gotify-key"), Some(GOTIFY_TOKEN));
    assert_eq!(gotify.json()["priority"], 3);
    assert_eq!(
        gotify.json()["extras"]["client::notification"]["click"]["url"],
        event.link.clone().unwrap()
    );

    let tem = by("tem");
    assert_eq!(tem.status, 200, "{}", tem.text());
    assert_eq!(
        tem.path,
        "/tem/transactional-email/v1alpha1/regions/nl-ams/emails"
    );
    let mail = tem.json();
    assert_eq!(mail["subject"], event.title);
    assert_eq!(mail["to"][1]["email"], "partner@example.com");
    assert_eq!(mail["project_id"], "11111111-2222-4333-8444-555555555555");
    assert!(mail["text"].as_str().unwrap().contains("report.html"));
}

#[test]
fn the_receivers_refuse_what_the_services_refuse() {
    // The receivers are the tests' yardstick: each must fail a request its
    // service would refuse, or the test above proves nothing.
    let receiver = Receiver::start();
    let (mut raw, env) = tables(&receiver);
    // ntfy without its token on a private topic, Gotify with a wrong one.
    raw[1].token_env = None;
    raw[4].token_env = Some("NTFY_TOKEN".into());
    let notifier = Notifier::new(targets(&raw[1..5], &env).unwrap(), quick());
    let deliveries = runtime().block_on(notifier.send(&done_event()));
    let outcome = |kind: &str| {
        deliveries
            .iter()
            .find(|d| d.target.starts_with(kind))
            .unwrap()
            .outcome
            .clone()
    };
    assert!(
        outcome("ntfy").unwrap_err().starts_with("HTTP 401"),
        "{:?}",
        outcome("ntfy")
    );
    assert!(outcome("gotify").unwrap_err().starts_with("HTTP 401"));
    // A Discord message past its limits, straight to the receiver.
    let long = serde_json::json!({ "content": "x".repeat(2001) });
    let reply = plex_burst_tests::http::http(
        "POST",
        &receiver.url(DISCORD_PATH),
        &[("Content-Type", "application/json")],
        Some(long.to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(
        (reply.status, reply.json()["code"].as_u64()),
        (400, Some(50035))
    );
    let empty = plex_burst_tests::http::http(
        "POST",
        &receiver.url(SLACK_PATH),
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    )
    .unwrap();
    assert_eq!((empty.status, empty.body.as_str()), (400, "no_text"));
}

fn quick() -> Retry {
    Retry {
        attempts: 3,
        first_backoff: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        max_wait: Duration::from_secs(2),
    }
}

#[test]
fn a_failing_target_is_retried_a_hanging_one_bounded_and_the_others_still_arrive() {
    let receiver = Receiver::start();
    let secret_url = receiver.url("/fail/hooks/failing-secret-path");
    let raw: Vec<RawTarget> = [
        ("webhook", secret_url.clone(), true),
        ("webhook", receiver.url("/hang/forever"), false),
        ("webhook", receiver.url("/limited/once"), false),
        ("ntfy", receiver.url("/ntfy/open-plexburst"), false),
    ]
    .into_iter()
    .map(|(kind, url, from_env)| RawTarget {
        kind: kind.into(),
        url: (!from_env).then(|| url.clone()),
        url_env: from_env.then(|| "FAILING_URL".into()),
        ..RawTarget::default()
    })
    .collect();
    let env = move |var: &str| (var == "FAILING_URL").then(|| secret_url.clone());
    let notifier = Notifier::new(targets(&raw, &env).unwrap(), quick());
    let started = std::time::Instant::now();
    let deliveries = runtime().block_on(notifier.send(&done_event()));
    let took = started.elapsed();

    let [failing, hanging, limited, ntfy] = &deliveries[..] else {
        panic!("{deliveries:?}")
    };
    assert_eq!(failing.attempts, 3);
    assert_eq!(
        failing.outcome,
        Err("HTTP 500: receiver told to fail".into())
    );
    assert_eq!(
        failing.target,
        format!(
            "webhook at {}",
            receiver
                .url("")
                .trim_start_matches("http://")
                .trim_end_matches('/')
        )
    );
    assert_eq!(hanging.attempts, 3);
    assert_eq!(hanging.outcome, Err("no answer within 1s".into()));
    assert_eq!((limited.attempts, &limited.outcome), (2, &Ok(())));
    assert_eq!((ntfy.attempts, &ntfy.outcome), (1, &Ok(())));
    // Three hung requests of 1 s and two backoffs: nothing waits longer.
    assert!(took < Duration::from_secs(10), "the send took {took:?}");
    // The second try of the limited target came after its Retry-After.
    let got = receiver.received();
    let limited_at: Vec<_> = got.iter().filter(|r| r.service == "limited").collect();
    assert_eq!(
        limited_at.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    for d in &deliveries {
        let text = format!("{d:?}");
        assert!(!text.contains("failing-secret-path"), "{text}");
    }
}

#[test]
fn a_notification_in_the_background_never_holds_up_its_sender_and_flush_is_bounded() {
    let receiver = Receiver::start();
    let raw = vec![RawTarget {
        kind: "webhook".into(),
        url: Some(receiver.url("/hang/forever")),
        ..RawTarget::default()
    }];
    let notifier = Notifier::new(
        targets(&raw, &|_| None).unwrap(),
        Retry {
            timeout: Duration::from_secs(30),
            ..quick()
        },
    );
    runtime().block_on(async {
        let started = std::time::Instant::now();
        notifier.spawn(done_event());
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "spawn waited"
        );
        notifier.flush(Duration::from_millis(300)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "flush waited past its bound"
        );
    });
    receiver.wait_until(Duration::from_secs(5), |got| {
        got.iter().any(|r| r.service == "hang")
    });
}
