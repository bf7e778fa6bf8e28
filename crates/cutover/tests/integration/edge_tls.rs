//! HTTPS at the edge: certificates from files, as a user meets them through `cutover deploy`.

use crate::support::*;
use cutover_http::testing::TestCa;
use std::fs;

/// `tls = { cert, key }` with `hosts`, appended to the staging environment.
fn with_tls(lab: &Lab, hosts: &str, cert: &str, key: &str) -> String {
    format!(
        "{}hosts = [{hosts}]\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\n",
        lab.config()
    )
}

#[test]
fn every_bad_certificate_file_refuses_the_deploy_naming_the_field_and_the_fix() {
    let lab = Lab::new();
    let v1 = lab.head();
    lab.deploy().expect(0);
    lab.assert_serving(&v1);
    let before = lab.ledger_summary();

    let ca = TestCa::new("lab CA");
    let certs = lab.repo.join("certs");
    fs::create_dir_all(&certs).unwrap();
    let good = ca.issue(&["tasks.example.com"]);
    let other = ca.issue(&["tasks.example.com"]);
    let expired = ca.issue_expired(&["tasks.example.com"]);
    let put = |name: &str, text: &[u8]| fs::write(certs.join(name), text).unwrap();
    put("good.crt", good.cert_pem.as_bytes());
    put("good.key", good.key_pem.as_bytes());
    put("other.key", other.key_pem.as_bytes());
    put("old.crt", expired.cert_pem.as_bytes());
    put("old.key", expired.key_pem.as_bytes());
    put("der.crt", good.cert_der());
    put("text.key", b"not a key\n");

    let host = "\"tasks.example.com\"";
    // (hosts, cert, key, what stderr must say)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            host,
            "certs/missing.crt",
            "certs/good.key",
            &[
                "[environments.staging] tls.cert",
                "missing.crt does not exist",
                "hint: put the certificate chain (PEM, leaf first) there",
            ],
        ),
        (
            host,
            "certs/good.crt",
            "certs/missing.key",
            &[
                "[environments.staging] tls.key",
                "missing.key does not exist",
                "hint: put the private key",
            ],
        ),
        (
            host,
            "certs",
            "certs/good.key",
            &[
                "[environments.staging] tls.cert",
                "cannot be read",
                "hint: make the file readable",
            ],
        ),
        (
            host,
            "certs/der.crt",
            "certs/good.key",
            &[
                "tls.cert",
                "holds no PEM certificate",
                "hint: give the certificate chain in PEM",
            ],
        ),
        (
            host,
            "certs/good.crt",
            "certs/text.key",
            &[
                "tls.key",
                "holds no PEM private key",
                "hint: give the certificate's private key in PEM",
            ],
        ),
        (
            host,
            "certs/old.crt",
            "certs/old.key",
            &[
                "tls.cert",
                "expired on 2001-01-01",
                "hint: renew the certificate",
            ],
        ),
        (
            host,
            "certs/good.crt",
            "certs/other.key",
            &[
                "tls.key",
                "does not belong to the certificate",
                "hint: give the private key the certificate was issued for",
            ],
        ),
        (
            "\"tasks.example.com\", \"www.example.com\"",
            "certs/good.crt",
            "certs/good.key",
            &[
                "[environments.staging] hosts",
                "does not cover www.example.com (it covers tasks.example.com)",
                "hint: use a certificate that names www.example.com",
            ],
        ),
    ];
    for (hosts, cert, key, needles) in cases {
        lab.commit_config(&with_tls(&lab, hosts, cert, key), "tls");
        let run = lab.deploy().expect(1).says(needles);
        assert_eq!(run.stderr.matches("error:").count(), 1, "{run:?}");
        assert_eq!(lab.ledger_summary(), before, "the ledger changed: {run:?}");
        lab.assert_serving(&v1);
    }
}
