//! Apps shaped like real ones: a virtualenv's symlinks in the bundle, a server that takes its
//! port as an argument.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::support::*;

#[test]
fn virtualenv_style_symlinks_deploy() {
    // The app lives in `.venv/lib` and is reached through `.venv/lib64 -> lib`, as in a
    // virtualenv; `bin/python` points out of the tree with an absolute target.
    let lab = Lab::with(|s| {
        s.build = r#"files = [".venv/**"]"#.into();
        s.run = "command = [\".venv/bin/tasks-app\"]\nstop_timeout = \"2s\"".into();
    });
    let venv = lab.repo.join(".venv");
    fs::create_dir_all(venv.join("lib/app")).unwrap();
    fs::create_dir_all(venv.join("bin")).unwrap();
    fs::copy(tasks_app(), venv.join("lib/app/tasks-app")).unwrap();
    symlink("lib", venv.join("lib64")).unwrap();
    symlink("/usr/bin/python3", venv.join("bin/python")).unwrap();
    symlink("../lib64/app/tasks-app", venv.join("bin/tasks-app")).unwrap();
    lab.git(&["add", "-A"]);
    let v1 = lab.commit("a virtualenv");

    let run = lab.deploy().expect(0);
    assert!(run.stderr.contains("collected 4 file(s)"), "{run:?}");
    lab.assert_serving(&v1);

    // The running instance's release dir has the links as links, not copies.
    let id = lab.history()[0]["id"].as_i64().unwrap();
    let release = lab
        .state_dir()
        .join("releases/staging")
        .join(id.to_string());
    let link = |p: &str| fs::read_link(release.join(p)).unwrap();
    assert_eq!(link(".venv/lib64"), Path::new("lib"));
    assert_eq!(link(".venv/bin/python"), Path::new("/usr/bin/python3"));
    assert_eq!(
        link(".venv/bin/tasks-app"),
        PathBuf::from("../lib64/app/tasks-app")
    );
    assert!(release.join(".venv/lib64/app/tasks-app").is_file());
    assert!(!release.join(".venv/lib/app/tasks-app").is_symlink());
}

#[test]
fn port_is_expanded_in_run_command() {
    // Like `gunicorn -b 127.0.0.1:${PORT}`: the port only reaches the app as an argument (the
    // variable is HTTP_PORT, which tasks-app does not read), and no `sh -c` wraps the command.
    let lab = Lab::with(|s| {
        s.build = r#"files = ["tasks-app", "serve.sh"]"#.into();
        s.run = "command = [\"./serve.sh\", \"-b\", \"127.0.0.1:${HTTP_PORT}\", \"--tag=$$HTTP_PORT\"]\nport_env = \"HTTP_PORT\"\nstop_timeout = \"2s\"".into();
    });
    let script = lab.repo.join("serve.sh");
    fs::write(
        &script,
        "#!/bin/sh\n# serve.sh -b HOST:PORT --tag=TAG\n[ \"$1\" = -b ] && [ \"$3\" = '--tag=$HTTP_PORT' ] || { echo \"bad arguments: $*\" >&2; exit 64; }\nHOST=\"${2%:*}\" PORT=\"${2##*:}\" exec ./tasks-app\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let v1 = lab.commit("a server taking its port as an argument");

    lab.deploy().expect(0);
    lab.assert_serving(&v1);
    let (status, body) = lab.get("/tasks").unwrap();
    assert_eq!((status, body.trim()), (200, "[]"));
}
