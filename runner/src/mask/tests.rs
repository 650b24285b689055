use super::*;

/// Key-shaped test values, built so that the tree holds no key-shaped text.
const SCW_KEY: &str = concat!("SCW", "AB12CD34EF56GH78J");
const AWS_KEY: &str = concat!("AK", "IAIOSFODNN7EXAMPL0");
const AWS_TEMP_KEY: &str = concat!("AS", "IA0123456789ABCDEF");

fn none() -> Masker {
    Masker::default()
}

#[test]
fn values_are_masked_with_their_encoded_forms() {
    let m = Masker::new(["s3cr3t/value+0123"]);
    assert_eq!(
        m.mask("k=s3cr3t/value+0123 url=s3cr3t%2Fvalue%2B0123 b64=czNjcjN0L3ZhbHVlKzAxMjM="),
        "k=******** url=******** b64=********="
    );
}

#[test]
fn a_secret_containing_another_is_masked_whole() {
    let m = Masker::new(["abcdefgh", "abcdefgh-and-more"]);
    assert_eq!(m.mask("x abcdefgh-and-more y"), "x ******** y");
}

#[test]
fn short_secrets_are_masked_only_as_whole_words() {
    let m = Masker::new(["abc"]);
    assert_eq!(
        m.mask("abc key=abc, label abcde xabc"),
        "******** key=********, label abcde xabc"
    );
}

#[test]
fn plex_tokens_in_queries_and_headers() {
    let m = none();
    assert_eq!(
        m.mask("GET /library/sections?X-Plex-Token=abc123&x=1 HTTP/1.1"),
        "GET /library/sections?X-Plex-Token=********&x=1 HTTP/1.1"
    );
    assert_eq!(m.mask("x-plex-token: abc"), "x-plex-token: ********");
    assert_eq!(m.mask("X-PLEX-TOKEN:abc"), "X-PLEX-TOKEN:********");
    // An empty value stays empty.
    assert_eq!(m.mask("?X-Plex-Token=&next=1"), "?X-Plex-Token=&next=1");
}

#[test]
fn any_token_parameter_and_json_key() {
    let m = none();
    assert_eq!(
        m.mask("/:/timeline?token=t0k&Token=u1&access_token=v2"),
        "/:/timeline?token=********&Token=********&access_token=********"
    );
    assert_eq!(
        m.mask(r#"{"authToken": "zzz", "tokens": 3}"#),
        r#"{"authToken": "********", "tokens": 3}"#
    );
    assert_eq!(m.mask("tokenizer: on"), "tokenizer: on");
}

#[test]
fn plex_tv_claim_tokens() {
    let m = none();
    assert_eq!(
        m.mask("POST /myplex/claim?token=claim-AbC_12-xyZ0123456789 ok"),
        "POST /myplex/claim?token=******** ok"
    );
    assert_eq!(
        m.mask("claimed with claim-AbC_12-xyZ0123456789."),
        "claimed with claim-********."
    );
    assert_eq!(m.mask("reclaim-x"), "reclaim-x");
}

#[test]
fn scaleway_secret_keys() {
    let m = none();
    let uuid = "0a1b2c3d-1111-4111-8111-abcdefabcdef";
    assert_eq!(
        m.mask(&format!("SCW_SECRET_KEY={uuid}")),
        "SCW_SECRET_KEY=********"
    );
    assert_eq!(
        m.mask(&format!("X-Auth-Token: {uuid}")),
        "X-Auth-Token: ********"
    );
    assert_eq!(
        m.mask(&format!(r#"{{"secret_key":"{uuid}"}}"#)),
        r#"{"secret_key":"********"}"#
    );
}

#[test]
fn access_key_ids_keep_their_prefix() {
    let m = none();
    assert_eq!(
        m.mask(&format!("key {SCW_KEY}, {AWS_KEY} {AWS_TEMP_KEY}")),
        "key SCWAB12********, AKIAIOS******** ASIA012********"
    );
    // Not the shape: left alone.
    let not_keys = format!(
        "{SCW_KEY}K {} X{SCW_KEY}",
        SCW_KEY.to_lowercase().replacen("scw", "SCW", 1)
    );
    assert_eq!(m.mask(&not_keys), not_keys);
}

#[test]
fn aws_secret_access_keys() {
    let m = none();
    assert_eq!(
        m.mask(
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCY\naws_secret_access_key = abc/def"
        ),
        "AWS_SECRET_ACCESS_KEY=********\naws_secret_access_key = ********"
    );
}

#[test]
fn authorization_headers() {
    let m = none();
    assert_eq!(
        m.mask(&format!("authorization: AWS4-HMAC-SHA256 Credential={AWS_KEY}/20261202/fr-par/s3/aws4_request, SignedHeaders=host, Signature=abcdef0123")),
        "authorization: AWS4-HMAC-SHA256 ********"
    );
    assert_eq!(
        m.mask(r#"headers: {"authorization": "Bearer eyJhbGci.x.y", "host": "h"}"#),
        r#"headers: {"authorization": "Bearer ********", "host": "h"}"#
    );
    assert_eq!(m.mask("sent Bearer abc.def"), "sent Bearer ********");
    // SigV4 parts outside a header line.
    assert_eq!(
        m.mask(&format!(
            "Credential={AWS_KEY}/20261202/fr-par/s3/aws4_request, Signature=abcdef"
        )),
        "Credential=********, Signature=********"
    );
}

#[test]
fn presigned_url_parameters() {
    let m = none();
    assert_eq!(
        m.mask(&format!("PUT https://s3.fr-par.scw.cloud/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={SCW_KEY}%2F20261202%2Ffr-par%2Fs3%2Faws4_request&X-Amz-Date=20261202T000000Z&X-Amz-Security-Token=tok&X-Amz-Signature=0123abcd")),
        "PUT https://s3.fr-par.scw.cloud/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=********&X-Amz-Date=20261202T000000Z&X-Amz-Security-Token=********&X-Amz-Signature=********"
    );
}

#[test]
fn text_outside_the_patterns_is_unchanged() {
    let m = Masker::new(["supersecretvalue"]);
    let text = "phase done: scan 12.3s, 300 tracks — ünïcode ok\n\nline three";
    assert_eq!(m.mask(text), text);
}

#[test]
fn masking_is_per_line_and_keeps_line_ends() {
    let m = none();
    assert_eq!(
        m.mask("a token=x\r\nb X-Plex-Token=y\nc"),
        "a token=********\r\nb X-Plex-Token=********\nc"
    );
}

#[test]
fn a_record_keeps_its_identifiers_and_loses_its_secrets() {
    hold("record-secret-0123");
    let record = format!(r#"{{"api_key": "{SCW_KEY}", "x": "record-secret-0123"}}"#);
    let record = record.as_bytes();
    assert_eq!(
        values_in_record(record),
        format!(r#"{{"api_key": "{SCW_KEY}", "x": "********"}}"#).as_bytes()
    );
    release("record-secret-0123");
}

#[test]
fn the_process_masker_masks_what_is_held() {
    hold("registered-secret-0123");
    assert_eq!(text("v=registered-secret-0123!"), "v=********!");
    assert_eq!(bytes(b"registered-secret-0123"), MASK.as_bytes());
    release("registered-secret-0123");
    assert_eq!(
        text("v=registered-secret-0123!"),
        "v=registered-secret-0123!"
    );
}
