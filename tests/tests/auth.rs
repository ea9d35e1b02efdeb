//! Signup, login and me, end to end, on whichever database the run uses.
use serde_json::json;
use souq_tests::TestCluster;

#[tokio::test]
async fn signup_login_me_and_enumeration_safe_answers() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = format!("Ali.{}@Example.com", uuid::Uuid::new_v4().simple());
    let pw = "sesame sesame";

    let first = c.post("/api/v1/auth/signup", None, json!({"email": email, "password": pw, "name": "Ali", "locale": "ar"})).await;
    assert_eq!(first.0, 202, "{}", first.1);
    assert!(first.1["message"].is_string());
    // Taken address: the very same answer.
    let again = c.post("/api/v1/auth/signup", None, json!({"email": email, "password": "another password"})).await;
    assert_eq!(again, first);

    let (status, login) = c.post("/api/v1/auth/login", None, json!({"email": email.to_uppercase(), "password": pw})).await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["token_type"], "Bearer");
    assert!(login["expires_in"].as_u64().unwrap() <= 900);
    assert_eq!(login["user"]["email"], email.to_lowercase());
    assert_eq!(login["user"]["locale"], "ar");
    let token = login["access_token"].as_str().unwrap();
    // A compact JWS with the EdDSA header.
    let header = token.split('.').next().unwrap();
    assert!(header.starts_with("eyJ"), "{header}");

    let (status, me) = c.get("/api/v1/auth/me", Some(token)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["id"], login["user"]["id"]);
    assert_eq!(me["user"]["name"], "Ali");
    assert_eq!(me["user"]["email_verified"], false);

    // Wrong password and unknown email: the same 401 body, but for its request's own
    // trace id.
    let mut wrong = c.post("/api/v1/auth/login", None, json!({"email": email, "password": "not the password"})).await;
    let mut unknown = c.post("/api/v1/auth/login", None, json!({"email": "nobody@example.com", "password": "not the password"})).await;
    assert_eq!(wrong.0, 401);
    for (_, p) in [&mut wrong, &mut unknown] {
        assert!(p.as_object_mut().and_then(|o| o.remove("trace_id")).is_some_and(|t| t.is_string()), "{p}");
    }
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.1["type"], "urn:souq:problem:unauthenticated");
    c.stop().await;
}

#[tokio::test]
async fn signup_rejects_bad_fields_with_422_naming_them() {
    let c = TestCluster::builder().agents(0).start().await;
    for (body, field) in [
        (json!({"email": "not-an-email", "password": "long enough pw"}), "email"),
        (json!({"email": "a@example.com", "password": "short"}), "password"),
        (json!({"email": "a@example.com", "password": "x".repeat(129)}), "password"),
        (json!({"email": "a@example.com", "password": "long enough pw", "locale": "xx"}), "locale"),
        (json!({"password": "long enough pw"}), "email"),
        (json!({"email": "a@example.com", "password": 12345678}), "password"),
    ] {
        let (status, problem) = c.post("/api/v1/auth/signup", None, body.clone()).await;
        assert_eq!(status, 422, "{body} -> {problem}");
        assert_eq!(problem["field"], field, "{body} -> {problem}");
        assert_eq!(problem["status"], 422);
    }
    c.stop().await;
}

#[tokio::test]
async fn missing_bad_and_forged_tokens_are_401() {
    let c = TestCluster::builder().agents(0).start().await;
    let token = c.user().await;
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for t in [None, Some("garbage"), Some("a.b.c"), Some(forged.as_str())] {
        let (status, problem) = c.get("/api/v1/auth/me", t).await;
        assert_eq!(status, 401, "{t:?} -> {problem}");
        assert_eq!(problem["type"], "urn:souq:problem:unauthenticated");
    }
    let resp = c.http.get(format!("{}/api/v1/auth/me", c.url)).header("authorization", "Basic abc").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    c.stop().await;
}
