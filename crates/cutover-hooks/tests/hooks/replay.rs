use cutover_hooks::ReplayGuard;

#[test]
fn a_replayed_delivery_id_is_refused_also_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".cutover/webhook-deliveries");
    let mut guard = ReplayGuard::open(&path).unwrap();
    assert!(guard
        .first_time("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .unwrap());
    assert!(!guard
        .first_time("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .unwrap());
    assert!(guard.first_time("another").unwrap());
    drop(guard);

    let mut reopened = ReplayGuard::open(&path).unwrap();
    assert!(!reopened
        .first_time("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .unwrap());
    assert!(!reopened.first_time("another").unwrap());
    assert!(reopened.first_time("new-one").unwrap());
}
