use cutover_hooks::{verify, Delivery, Push, Verified, WebhookError};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: &[u8] = b"It's a Secret to Everybody";
const SHA: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect()
}

fn github_body(git_ref: &str, after: &str) -> Vec<u8> {
    format!(
        r#"{{"ref":"{git_ref}","before":"{}","after":"{after}","repository":{{"full_name":"o/r"}},"pusher":{{"name":"alice"}}}}"#,
        "1".repeat(40)
    )
    .into_bytes()
}

fn gitlab_body(git_ref: &str, after: &str) -> Vec<u8> {
    format!(
        r#"{{"object_kind":"push","ref":"{git_ref}","after":"{after}","project":{{"path_with_namespace":"group/app"}},"user_username":"bob"}}"#
    )
    .into_bytes()
}

/// A GitHub delivery of `event` with `body`, signed with `secret`.
fn github(event: &str, body: &[u8], secret: &[u8]) -> Vec<(String, String)> {
    let sig = format!("sha256={}", hmac_hex(secret, body));
    headers(&[
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-Hub-Signature-256", &sig),
        ("Content-Type", "application/json"),
    ])
}

fn check(headers: &[(String, String)], body: &[u8]) -> Result<Verified, WebhookError> {
    verify(&Delivery { headers, body }, SECRET)
}

fn push(v: Result<Verified, WebhookError>) -> Push {
    match v {
        Ok(Verified::Push(p)) => p,
        other => panic!("expected a push, got {other:?}"),
    }
}

#[test]
fn github_push_signed_right_is_a_push() {
    let body = github_body("refs/heads/main", SHA);
    let p = push(check(&github("push", &body, SECRET), &body));
    assert_eq!(
        p,
        Push {
            forge: "github".into(),
            delivery_id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            branch: "main".into(),
            sha: SHA.into(),
            repository: Some("o/r".into()),
            pusher: Some("alice".into()),
        }
    );
}

#[test]
fn gitea_push_signed_right_is_a_push() {
    let body = br#"{"ref":"refs/heads/feature/x","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","repository":{"full_name":"o/r"},"pusher":{"login":"carol","username":"carol"}}"#;
    let sig = hmac_hex(SECRET, body);
    // Gitea also sends the GitHub-compatible headers; they must not fool detection.
    let h = headers(&[
        ("X-Gitea-Event", "push"),
        ("X-Gitea-Delivery", "d-1"),
        ("X-Gitea-Signature", &sig),
        ("X-GitHub-Event", "push"),
    ]);
    let p = push(check(&h, body));
    assert_eq!(p.forge, "gitea");
    assert_eq!(p.branch, "feature/x");
    assert_eq!(p.sha, SHA);
    assert_eq!(p.delivery_id.as_deref(), Some("d-1"));
    assert_eq!(p.repository.as_deref(), Some("o/r"));
    assert_eq!(p.pusher.as_deref(), Some("carol"));
}

#[test]
fn forgejo_push_signed_right_is_a_push() {
    let body = github_body("refs/heads/main", SHA);
    let sig = hmac_hex(SECRET, &body);
    let h = headers(&[
        ("X-Forgejo-Event", "push"),
        ("X-Forgejo-Delivery", "f-1"),
        ("X-Forgejo-Signature", &sig),
        ("X-Gitea-Event", "push"),
        ("X-Gitea-Signature", &sig),
    ]);
    let p = push(check(&h, &body));
    assert_eq!(p.forge, "forgejo");
    assert_eq!((p.branch.as_str(), p.sha.as_str()), ("main", SHA));
    assert_eq!(p.delivery_id.as_deref(), Some("f-1"));
}

#[test]
fn gitlab_push_with_the_right_token_is_a_push() {
    let body = gitlab_body("refs/heads/main", SHA);
    let token = String::from_utf8(SECRET.to_vec()).unwrap();
    let h = headers(&[
        ("X-Gitlab-Event", "Push Hook"),
        ("X-Gitlab-Token", &token),
        ("X-Gitlab-Event-UUID", "g-1"),
    ]);
    let p = push(check(&h, &body));
    assert_eq!(
        p,
        Push {
            forge: "gitlab".into(),
            delivery_id: Some("g-1".into()),
            branch: "main".into(),
            sha: SHA.into(),
            repository: Some("group/app".into()),
            pusher: Some("bob".into()),
        }
    );
    // Idempotency-Key is the fallback delivery id.
    let h = headers(&[
        ("X-Gitlab-Event", "Push Hook"),
        ("X-Gitlab-Token", &token),
        ("Idempotency-Key", "k-9"),
    ]);
    assert_eq!(push(check(&h, &body)).delivery_id.as_deref(), Some("k-9"));
}

#[test]
fn a_wrong_signature_is_bad_and_the_body_is_not_parsed() {
    let body = github_body("refs/heads/main", SHA);
    let e = check(&github("push", &body, b"wrong secret"), &body).unwrap_err();
    assert_eq!(e, WebhookError::BadSignature);
    assert_eq!(e.status(), 401);

    // A malformed body with a wrong signature is still BadSignature: nothing parsed first.
    let garbage = b"{not json";
    let e = check(&github("push", garbage, b"wrong secret"), garbage).unwrap_err();
    assert_eq!(e, WebhookError::BadSignature);
    // Even the event type is not looked at.
    let e = check(&github("issues", garbage, b"wrong secret"), garbage).unwrap_err();
    assert_eq!(e, WebhookError::BadSignature);

    // A signature over other bytes (the body re-serialized, say) does not verify.
    let mut tampered = body.clone();
    tampered.push(b' ');
    let e = check(&github("push", &body, SECRET), &tampered).unwrap_err();
    assert_eq!(e, WebhookError::BadSignature);

    // Gitea and GitLab too.
    let h = headers(&[
        ("X-Gitea-Event", "push"),
        ("X-Gitea-Signature", &hmac_hex(b"nope", garbage)),
    ]);
    assert_eq!(check(&h, garbage).unwrap_err(), WebhookError::BadSignature);
    let h = headers(&[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "nope")]);
    assert_eq!(check(&h, garbage).unwrap_err(), WebhookError::BadSignature);
    // Not hex, no prefix, wrong length.
    for sig in ["sha256=zz", &hmac_hex(SECRET, &body), "sha256=abcd"] {
        let h = headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", sig)]);
        assert_eq!(
            check(&h, &body).unwrap_err(),
            WebhookError::BadSignature,
            "{sig}"
        );
    }
}

#[test]
fn an_empty_secret_never_verifies() {
    let body = github_body("refs/heads/main", SHA);
    let h = github("push", &body, b"");
    let e = verify(
        &Delivery {
            headers: &h,
            body: &body,
        },
        b"",
    )
    .unwrap_err();
    assert_eq!(e, WebhookError::BadSignature);
}

#[test]
fn a_missing_signature_is_missing() {
    let body = github_body("refs/heads/main", SHA);
    for h in [
        headers(&[("X-GitHub-Event", "push")]),
        // GitHub's legacy SHA-1 signature alone is not accepted.
        headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature", "sha1=abc")]),
        headers(&[("X-Gitea-Event", "push")]),
        headers(&[("X-Forgejo-Event", "push")]),
        headers(&[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "")]),
    ] {
        let e = check(&h, &body).unwrap_err();
        assert_eq!(e, WebhookError::MissingSignature, "{h:?}");
        assert_eq!(e.status(), 401);
    }
}

#[test]
fn no_forge_headers_is_an_unknown_forge() {
    let body = github_body("refs/heads/main", SHA);
    let h = headers(&[("Content-Type", "application/json")]);
    let e = check(&h, &body).unwrap_err();
    assert_eq!(e, WebhookError::UnknownForge);
    assert_eq!(e.status(), 400);
}

#[test]
fn signed_but_malformed_says_what_is_wrong() {
    let cases: &[(&[u8], &str)] = &[
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (
            br#"{"after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}"#,
            "`ref` is missing",
        ),
        (br#"{"ref":"refs/heads/main"}"#, "`after` is missing"),
        (
            br#"{"ref":7,"after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}"#,
            "`ref` is not a string",
        ),
        (
            br#"{"ref":"refs/heads/main","after":"abc"}"#,
            "`after` is not a commit SHA",
        ),
        (
            br#"{"ref":"refs/heads/","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}"#,
            "no branch name",
        ),
    ];
    for (body, want) in cases {
        let e = check(&github("push", body, SECRET), body).unwrap_err();
        assert_eq!(e.status(), 400);
        let WebhookError::Malformed(msg) = &e else {
            panic!(
                "expected Malformed for {}, got {e:?}",
                String::from_utf8_lossy(body)
            );
        };
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    }
}

#[test]
fn error_messages_never_contain_the_secret_or_the_expected_signature() {
    let body = github_body("refs/heads/main", SHA);
    let expected = hmac_hex(SECRET, &body);
    let secret = String::from_utf8(SECRET.to_vec()).unwrap();
    let deliveries = [
        github("push", &body, b"wrong"),
        headers(&[("X-GitHub-Event", "push")]),
        headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", "It's a"),
        ]),
        headers(&[("Accept", "*/*")]),
    ];
    for h in &deliveries {
        let e = check(h, &body).unwrap_err();
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(&secret), "{text}");
            assert!(!text.contains(&expected), "{text}");
        }
    }
}

#[test]
fn github_ping_is_a_ping() {
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    assert_eq!(
        check(&github("ping", body, SECRET), body),
        Ok(Verified::Ping)
    );
}

#[test]
fn an_unknown_event_type_is_refused() {
    let body = br#"{"action":"opened","issue":{}}"#;
    let e = check(&github("issues", body, SECRET), body).unwrap_err();
    assert_eq!(e, WebhookError::UnknownEvent("issues".into()));
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains("issues"));
    let h = headers(&[
        ("X-Gitlab-Event", "Merge Request Hook"),
        ("X-Gitlab-Token", std::str::from_utf8(SECRET).unwrap()),
    ]);
    assert!(
        matches!(check(&h, body), Err(WebhookError::UnknownEvent(e)) if e == "Merge Request Hook")
    );
}

#[test]
fn tag_pushes_and_branch_deletions_are_ignored() {
    let body = github_body("refs/tags/v1.2.0", SHA);
    match check(&github("push", &body, SECRET), &body) {
        Ok(Verified::Ignored { event, reason }) => {
            assert_eq!(event, "push");
            assert!(
                reason.contains("tag") && reason.contains("v1.2.0"),
                "{reason}"
            );
        }
        other => panic!("expected Ignored, got {other:?}"),
    }

    let body = github_body("refs/heads/main", &"0".repeat(40));
    match check(&github("push", &body, SECRET), &body) {
        Ok(Verified::Ignored { reason, .. }) => assert!(reason.contains("deleted"), "{reason}"),
        other => panic!("expected Ignored, got {other:?}"),
    }

    let body = gitlab_body("refs/tags/v1", SHA);
    let h = headers(&[
        ("X-Gitlab-Event", "Tag Push Hook"),
        ("X-Gitlab-Token", std::str::from_utf8(SECRET).unwrap()),
    ]);
    assert!(matches!(check(&h, &body), Ok(Verified::Ignored { .. })));

    let body = github_body("refs/pull/7/head", SHA);
    assert!(matches!(
        check(&github("push", &body, SECRET), &body),
        Ok(Verified::Ignored { .. })
    ));
}

#[test]
fn header_names_match_whatever_their_case() {
    let body = github_body("refs/heads/main", SHA);
    let sig = format!("sha256={}", hmac_hex(SECRET, &body));
    let h = vec![
        ("X-GitHub-Event".to_string(), "push".to_string()),
        ("X-HUB-SIGNATURE-256".to_string(), sig),
    ];
    assert_eq!(push(check(&h, &body)).branch, "main");
}

#[test]
fn sha256_object_format_repositories_are_accepted() {
    let sha = "ab".repeat(32);
    let body = github_body("refs/heads/main", &sha.to_uppercase());
    assert_eq!(push(check(&github("push", &body, SECRET), &body)).sha, sha);
}
