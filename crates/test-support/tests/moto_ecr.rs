//! moto answers ECR GetAuthorizationToken deterministically and the proxy counts the calls.

use test_support::*;

fn get_authorization_token(moto: &Moto) -> HttpResponse {
    HttpRequest::new("POST", &format!("{}/", moto.endpoint_url()))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("X-Amz-Target", GET_AUTHORIZATION_TOKEN_TARGET)
        // moto does not check SigV4, but the SDK always sends one: so do we.
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/ecr/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-target, Signature=00",
        )
        .header("X-Amz-Date", "20240101T000000Z")
        .body("{}")
        .send()
        .expect("moto answers")
}

#[test]
fn get_authorization_token_is_deterministic_and_counted() {
    let wd = WorkDir::new("moto");
    let moto = Moto::start(&wd);
    assert_eq!(moto.get_authorization_token_calls(), 0);

    let resp = get_authorization_token(&moto);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body: serde_json::Value = serde_json::from_slice(&resp.body).expect("JSON");
    let data = &body["authorizationData"][0];
    assert_eq!(data["authorizationToken"], Moto::expected_authorization_token());
    assert!(
        data["proxyEndpoint"]
            .as_str()
            .is_some_and(|e| e.contains(Moto::ACCOUNT_ID)),
        "{body}"
    );
    assert_eq!(moto.get_authorization_token_calls(), 1);

    moto.fail_get_authorization_token(1, 500);
    assert_eq!(get_authorization_token(&moto).status, 500);
    assert_eq!(get_authorization_token(&moto).status, 200);
    assert_eq!(moto.get_authorization_token_calls(), 3);
    assert!(moto.calls()[1].injected);

    let env = moto.aws_env();
    assert!(env.contains(&("AWS_ENDPOINT_URL_ECR".to_string(), moto.endpoint_url())));
    assert_eq!(Moto::expected_password(), "123456789012-auth-token");
}
