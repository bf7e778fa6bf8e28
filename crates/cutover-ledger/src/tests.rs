use super::*;

fn ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger.db")).unwrap();
    (dir, ledger)
}

fn deploy(ledger: &mut Ledger, version: &str) -> Release {
    ledger
        .create_release(&NewRelease {
            app: "app".into(),
            env: "staging".into(),
            version: version.into(),
            artifact: format!("app:{version}"),
            digest: format!("sha256:{version}"),
            snapshot: Snapshot::default(),
            kind: ReleaseKind::Deploy,
            restored_from: None,
            requested_by: "tester".into(),
            trigger: "cli".into(),
            author: None,
        })
        .unwrap()
}

/// Takes a release all the way to live, superseding the current live one.
fn go_live(ledger: &mut Ledger, id: i64, pass_monitor: bool) {
    if let Some(live) = ledger.live("staging").unwrap() {
        ledger
            .transition(live.id, ReleaseState::Superseded, None, "superseded")
            .unwrap();
    }
    ledger
        .transition(id, ReleaseState::Starting, None, "starting")
        .unwrap();
    ledger
        .transition(id, ReleaseState::Verifying, None, "verifying")
        .unwrap();
    ledger
        .transition(id, ReleaseState::Live, None, "live")
        .unwrap();
    if pass_monitor {
        ledger.mark_passed_monitor(id, "passed").unwrap();
    }
}

#[test]
fn a_release_records_its_timeline_in_order() {
    let (_d, mut l) = ledger();
    let r = deploy(&mut l, "aaa");
    go_live(&mut l, r.id, true);
    let kinds: Vec<_> = l
        .events(r.id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        ["pending", "starting", "verifying", "live", "known-good"]
    );
    let r = l.get(r.id).unwrap();
    assert_eq!(r.state, ReleaseState::Live);
    assert!(r.started_at.is_some() && r.live_at.is_some() && r.ended_at.is_none());
}

#[test]
fn no_rollback_target_without_a_second_known_good() {
    let (_d, mut l) = ledger();
    let a = deploy(&mut l, "aaa");
    go_live(&mut l, a.id, true);
    assert!(l.rollback_target("staging").unwrap().is_none());
}

#[test]
fn rollback_target_is_the_previous_known_good_even_inside_the_monitor_window() {
    let (_d, mut l) = ledger();
    let a = deploy(&mut l, "aaa");
    go_live(&mut l, a.id, true);
    let b = deploy(&mut l, "bbb");
    go_live(&mut l, b.id, false);
    assert_eq!(l.rollback_target("staging").unwrap().unwrap().id, a.id);
}

#[test]
fn a_second_rollback_walks_further_back_instead_of_bouncing() {
    let (_d, mut l) = ledger();
    let ids: Vec<i64> = ["aaa", "bbb", "ccc"]
        .iter()
        .map(|v| {
            let r = deploy(&mut l, v);
            go_live(&mut l, r.id, true);
            r.id
        })
        .collect();
    // First rollback: from ccc to bbb, recorded as a new release restoring bbb.
    let target = l.rollback_target("staging").unwrap().unwrap();
    assert_eq!(target.id, ids[1]);
    let rb = l
        .create_release(&NewRelease {
            kind: ReleaseKind::Rollback,
            restored_from: Some(target.id),
            ..new_from(&target)
        })
        .unwrap();
    l.transition(
        ids[2],
        ReleaseState::RolledBack,
        Some("rolled back by tester"),
        "left",
    )
    .unwrap();
    l.transition(rb.id, ReleaseState::Starting, None, "s")
        .unwrap();
    l.transition(rb.id, ReleaseState::Live, None, "l").unwrap();
    // Second rollback: not back to ccc (rolled back) nor bbb (what is live), but aaa.
    assert_eq!(l.rollback_target("staging").unwrap().unwrap().id, ids[0]);
}

fn new_from(r: &Release) -> NewRelease {
    NewRelease {
        app: r.app.clone(),
        env: r.env.clone(),
        version: r.version.clone(),
        artifact: r.artifact.clone(),
        digest: r.digest.clone(),
        snapshot: r.snapshot.clone(),
        kind: r.kind,
        restored_from: r.restored_from,
        requested_by: "tester".into(),
        trigger: "cli".into(),
        author: None,
    }
}

#[test]
fn secret_hashes_are_salted_and_never_contain_the_value() {
    let (_d, l) = ledger();
    let mut s = BTreeMap::new();
    s.insert("API_TOKEN".to_string(), "hunter2".to_string());
    let h = l.hash_secrets(&s).unwrap();
    assert!(!h["API_TOKEN"].contains("hunter2"));
    let (_d2, other) = ledger();
    assert_ne!(
        h,
        other.hash_secrets(&s).unwrap(),
        "salt differs per ledger"
    );
    assert_eq!(h, l.hash_secrets(&s).unwrap(), "stable within one ledger");
}

#[test]
fn in_flight_lists_transient_releases_only() {
    let (_d, mut l) = ledger();
    let a = deploy(&mut l, "aaa");
    go_live(&mut l, a.id, true);
    let b = deploy(&mut l, "bbb");
    l.transition(b.id, ReleaseState::Starting, None, "s")
        .unwrap();
    let ids: Vec<_> = l.in_flight().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, [b.id]);
}

#[test]
fn a_transition_of_an_unknown_release_is_an_error() {
    let (_d, mut l) = ledger();
    assert!(matches!(
        l.transition(42, ReleaseState::Live, None, "x"),
        Err(LedgerError::NoSuchRelease(42))
    ));
}

#[test]
fn a_promotion_records_the_release_it_ships_and_is_a_way_back_like_a_deploy() {
    let (_d, mut l) = ledger();
    let staged = deploy(&mut l, "aaa");
    go_live(&mut l, staged.id, true);
    let mut new = new_from(&staged);
    new.env = "production".into();
    new.kind = ReleaseKind::Promote;
    let promoted = l
        .create_promotion(&new, &crate::PromotedFrom::from(&staged))
        .unwrap();
    assert_eq!(promoted.kind, ReleaseKind::Promote);
    assert_eq!(
        promoted.promoted_from,
        Some(Promotion {
            release: staged.id,
            env: "staging".into()
        })
    );
    let first = &l.events(promoted.id).unwrap()[0];
    assert!(
        first
            .message
            .contains(&format!("release {} of staging", staged.id)),
        "{first:?}"
    );
    assert_eq!(l.get(staged.id).unwrap().promoted_from, None);
    // Known-good and rollback targets treat it as any release of its environment.
    for state in [
        ReleaseState::Starting,
        ReleaseState::Verifying,
        ReleaseState::Live,
    ] {
        l.transition(promoted.id, state, None, "x").unwrap();
    }
    l.mark_passed_monitor(promoted.id, "passed").unwrap();
    let good: Vec<_> = l
        .known_good("production")
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(good, [promoted.id]);
}

#[test]
fn a_cut_over_is_written_whole_or_not_at_all() {
    let (_d, mut l) = ledger();
    let a = deploy(&mut l, "a");
    go_live(&mut l, a.id, true);
    let b = deploy(&mut l, "b");
    l.transition(b.id, ReleaseState::Verifying, None, "verifying")
        .unwrap();
    // The second half fails (no such release): the first must not stay written.
    let err = l.transition_all(&[
        Transition {
            id: b.id,
            state: ReleaseState::Live,
            reason: None,
            message: "live",
        },
        Transition {
            id: 4242,
            state: ReleaseState::Superseded,
            reason: None,
            message: "superseded",
        },
    ]);
    assert!(matches!(err, Err(LedgerError::NoSuchRelease(4242))));
    assert_eq!(l.live("staging").unwrap().unwrap().id, a.id);
    assert_eq!(l.get(b.id).unwrap().state, ReleaseState::Verifying);

    l.transition_all(&[
        Transition {
            id: b.id,
            state: ReleaseState::Live,
            reason: None,
            message: "live",
        },
        Transition {
            id: a.id,
            state: ReleaseState::Superseded,
            reason: None,
            message: "superseded",
        },
    ])
    .unwrap();
    assert_eq!(l.live("staging").unwrap().unwrap().id, b.id);
    assert_eq!(l.get(a.id).unwrap().state, ReleaseState::Superseded);
}

#[test]
fn tokens_issued_before_roles_become_deploy_and_carry_their_role() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        // A ledger of the version before roles: its tokens table has no `role`.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE tokens (name TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, created_by TEXT NOT NULL, created_at TEXT NOT NULL);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO tokens VALUES ('old', ?1, 'admin', '2026-01-01T00:00:00.000Z')",
            [token_hash("cut_old")],
        )
        .unwrap();
    }
    let mut l = Ledger::open(&path).unwrap();
    assert_eq!(
        l.token_owner("cut_old").unwrap(),
        Some(("old".to_string(), "deploy".to_string()))
    );
    let t = l.create_token("ro", "read", "admin").unwrap();
    assert_eq!(l.token_owner(&t).unwrap().unwrap().1, "read");
    assert!(l.revoke_token("ro").unwrap());
    assert_eq!(l.token_owner(&t).unwrap(), None);
}

#[test]
fn an_edge_hold_is_recorded_replaced_and_lifted() {
    let (_dir, mut l) = ledger();
    assert_eq!(l.edge_hold("staging").unwrap(), None);
    let at = chrono::Utc::now();
    let maintenance = EdgeHold {
        kind: EdgeHoldKind::Maintenance {
            message: "back soon".into(),
        },
        by: "ana".into(),
        at,
    };
    l.set_edge_hold("staging", &maintenance).unwrap();
    let read = l.edge_hold("staging").unwrap().unwrap();
    assert_eq!(read.by, "ana");
    assert_eq!(
        read.kind,
        EdgeHoldKind::Maintenance {
            message: "back soon".into()
        }
    );
    let until = at + chrono::Duration::seconds(30);
    let pause = EdgeHold {
        kind: EdgeHoldKind::Pause { until },
        by: "bo".into(),
        at,
    };
    l.set_edge_hold("staging", &pause).unwrap();
    match l.edge_hold("staging").unwrap().unwrap().kind {
        EdgeHoldKind::Pause { until: read } => {
            assert_eq!(
                read.timestamp_millis() / 1000,
                until.timestamp_millis() / 1000
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(l.edge_hold("production").unwrap(), None);
    assert!(l.clear_edge_hold("staging").unwrap());
    assert!(!l.clear_edge_hold("staging").unwrap());
    assert_eq!(l.edge_hold("staging").unwrap(), None);
}
