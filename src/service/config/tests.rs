use super::*;
use std::io::Write;

const MINIMAL: &str = r#"
[accounts.main]
url = "http://127.0.0.1:8080"
username = "agent1"
password = "s3cret-value"

[sinks.console]
type = "log"
"#;

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let f = write(MINIMAL);
    let c = Config::load_with_env(f.path(), no_env()).unwrap();
    let a = &c.accounts["main"];
    assert_eq!(a.channels, vec!["/v2/me/chats"]);
    assert_eq!(
        a.notifications_url().unwrap().as_str(),
        "http://127.0.0.1:8080/api/v2/notifications"
    );
    assert_eq!(c.bayeux.max_response_bytes, 8 * 1024 * 1024);
    assert_eq!(c.bayeux.max_network_delay, Duration::from_secs(10));
    assert_eq!(c.tracker.max_chats, 100_000);
}

#[test]
fn unknown_key_error_names_the_key_and_the_file() {
    let f = write(&MINIMAL.replace("username", "usernme"));
    let e = Config::load_with_env(f.path(), no_env())
        .unwrap_err()
        .to_string();
    assert!(e.contains("usernme"), "{e}");
    assert!(e.contains("accounts.main"), "{e}");
    assert!(e.contains(&f.path().display().to_string()), "{e}");
}

#[test]
fn wrong_type_error_names_the_key() {
    let f = write(&format!("{MINIMAL}\n[bayeux]\nmax_backoff = \"soon\"\n"));
    let e = Config::load_with_env(f.path(), no_env())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bayeux.max_backoff"), "{e}");
}

#[test]
fn environment_overrides_use_double_underscores() {
    let f = write(MINIMAL);
    let env = vec![
        ("CHATWATCH__BAYEUX__MAX_BACKOFF".to_owned(), "5s".to_owned()),
        (
            "CHATWATCH__ACCOUNTS__MAIN__URL".to_owned(),
            "https://gws.example:8443".to_owned(),
        ),
    ];
    let c = Config::load_with_env(f.path(), env).unwrap();
    assert_eq!(c.bayeux.max_backoff, Duration::from_secs(5));
    assert_eq!(c.accounts["main"].url.as_str(), "https://gws.example:8443/");
    let typo = vec![("CHATWATCH__BAYEUX__MAX_BACKOF".to_owned(), "5s".to_owned())];
    let e = Config::load_with_env(f.path(), typo)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_backof"), "{e}");
}

#[test]
fn secrets_never_print() {
    let f = write(MINIMAL);
    let c = Config::load_with_env(f.path(), no_env()).unwrap();
    let shown = format!("{c:?} {}", toml::to_string(&c).unwrap());
    assert!(!shown.contains("s3cret-value"), "{shown}");
    assert!(shown.contains("***"));
}

#[test]
fn password_from_file_or_env() {
    let mut pw = tempfile::NamedTempFile::new().unwrap();
    pw.write_all(b"from-file\n").unwrap();
    let text = MINIMAL.replace(
        "password = \"s3cret-value\"",
        &format!("password_file = \"{}\"", pw.path().display()),
    );
    let f = write(&text);
    let c = Config::load_with_env(f.path(), no_env()).unwrap();
    let p = c.accounts["main"]
        .resolve_password("main")
        .unwrap()
        .unwrap();
    assert_eq!(p.expose(), "from-file");

    let text = MINIMAL.replace(
        "password = \"s3cret-value\"",
        "password_env = \"CHATWATCH_TEST_NO_SUCH_VAR\"",
    );
    let f = write(&text);
    let c = Config::load_with_env(f.path(), no_env()).unwrap();
    let e = c.accounts["main"]
        .resolve_password("main")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("accounts.main.password_env") && e.contains("CHATWATCH_TEST_NO_SUCH_VAR"),
        "{e}"
    );
}

#[test]
fn resolve_reads_each_secret_once_into_the_config_and_names_the_key() {
    let mut pw = tempfile::NamedTempFile::new().unwrap();
    pw.write_all(b"from-file\n").unwrap();
    let mut key = tempfile::NamedTempFile::new().unwrap();
    key.write_all(&[0xff, 0x01]).unwrap();
    let text = MINIMAL.replace(
        "password = \"s3cret-value\"",
        &format!("password = {{ file = \"{}\" }}", pw.path().display()),
    ) + &format!(
        "[sinks.audit]\ntype = \"audit\"\ndir = \"/tmp/x\"\nhmac_key_file = \"{}\"\n",
        key.path().display()
    );
    let f = write(&text);
    let c = Config::load_with_env(f.path(), no_env()).unwrap();
    let r = c
        .resolve(&mut Resolver::new(crate::secret::ResolveMode::Run))
        .unwrap();
    let a = &r.accounts["main"];
    assert!(
        matches!(a.password, Some(SecretSource::Resolved(_))),
        "{a:?}"
    );
    assert_eq!(
        a.resolve_password("main").unwrap().unwrap().expose(),
        "from-file"
    );
    let SinkConfig::Audit(audit) = &r.sinks["audit"] else {
        panic!()
    };
    assert_eq!(audit.hmac_key_file, None);
    match &audit.hmac_key {
        Some(SecretSource::Resolved(k)) => assert_eq!(k.expose(), [0xff, 0x01]),
        other => panic!("{other:?}"),
    }
    let shown = format!("{r:?} {}", toml::to_string(&r).unwrap());
    assert!(!shown.contains("from-file"), "{shown}");

    // Errors name the key as written: the table form or the alias.
    for (line, key) in [
        (
            "password = { env = \"CW_NO_SUCH_VAR\" }",
            "accounts.main.password.env",
        ),
        (
            "password_env = \"CW_NO_SUCH_VAR\"",
            "accounts.main.password_env",
        ),
        (
            "password_file = \"/nonexistent/pw\"",
            "accounts.main.password_file",
        ),
    ] {
        let f = write(&MINIMAL.replace("password = \"s3cret-value\"", line));
        let c = Config::load_with_env(f.path(), no_env()).unwrap();
        let e = c
            .resolve(&mut Resolver::new(crate::secret::ResolveMode::Run))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("{key}: ")), "{key}: {e}");
    }
}

#[test]
fn a_command_needs_no_sink_the_daemon_does() {
    let f = write(&MINIMAL.replace("[sinks.console]\ntype = \"log\"", ""));
    assert!(Config::load_with_env_for(f.path(), no_env(), Purpose::Command).is_ok());
    let e = Config::load_with_env(f.path(), no_env())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no sink"), "{e}");
    let f = write(&MINIMAL.replace("[sinks.console]", "[sinks.\"..\"]"));
    let e = Config::load_with_env(f.path(), no_env())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be used as a file name"), "{e}");
}

#[test]
fn cross_field_rules_are_enforced() {
    for (text, needle) in [
        (
            MINIMAL.replace(
                "password = \"s3cret-value\"",
                "password = \"a\"\npassword_env = \"X\"",
            ),
            "only one of",
        ),
        (
            MINIMAL.replace("[sinks.console]\ntype = \"log\"", ""),
            "no sink",
        ),
        (
            MINIMAL.replace("url = \"http://", "url = \"ftp://"),
            "scheme",
        ),
        (format!("{MINIMAL}\n[accounts.main.x]\n"), "unknown field"),
        (
            MINIMAL.replace(
                "password = \"s3cret-value\"",
                "channels = [\"/v2/*/chats\"]",
            ),
            "glob",
        ),
    ] {
        let f = write(&text);
        let e = Config::load_with_env(f.path(), no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

#[test]
fn accounts_as_an_array_of_tables_or_a_table_of_tables() {
    let array = r#"
[[accounts]]
name = "east"
url = "http://127.0.0.1:8080"

[[accounts]]
name = "west"
url = "http://127.0.0.1:8081"
channels = ["/v2/me/*"]

[sinks.console]
type = "log"
"#;
    let f = write(array);
    let c = Config::load_with_env(f.path(), no_env()).unwrap();
    assert_eq!(c.accounts.keys().collect::<Vec<_>>(), ["east", "west"]);
    assert_eq!(c.accounts["west"].channels, ["/v2/me/*"]);
    assert_eq!(c.accounts["east"].name, None);
    // Printed back as [[accounts]] with names, and read back the same.
    let shown = toml::to_string(&c).unwrap();
    assert!(
        shown.contains("[[accounts]]") && shown.contains("name = \"west\""),
        "{shown}"
    );
    let again = write(&shown);
    let c2 = Config::load_with_env(again.path(), no_env()).unwrap();
    assert_eq!(c2.accounts, c.accounts);

    let f = write(MINIMAL);
    let c = Config::load_with_env(f.path(), no_env()).unwrap();
    assert!(c.accounts.contains_key("main"));
}

#[test]
fn account_names_are_checked() {
    for (text, needle) in [
        (
            "[[accounts]]\nurl = \"http://h\"\n".to_owned(),
            "has no `name`",
        ),
        (
            "[[accounts]]\nname = \"a\"\nurl = \"http://h\"\n[[accounts]]\nname = \"a\"\nurl = \"http://h\"\n"
                .to_owned(),
            "two accounts are named `a`",
        ),
        (
            "[[accounts]]\nname = \"a b\"\nurl = \"http://h\"\n".to_owned(),
            "account name `a b`",
        ),
        (
            "[accounts.a]\nname = \"b\"\nurl = \"http://h\"\n".to_owned(),
            "make them equal",
        ),
    ] {
        let f = write(&format!("{text}\n[sinks.console]\ntype = \"log\"\n"));
        let e = Config::load_with_env(f.path(), no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
        assert!(e.contains("accounts"), "{e}");
    }
}

#[test]
fn admin_listener_defaults_to_loopback() {
    let f = write(MINIMAL);
    let c = Config::load_with_env(f.path(), no_env()).unwrap();
    assert!(c.admin.enabled);
    assert!(c.admin.listen.ip().is_loopback());
    assert_eq!(c.log.format, LogFormat::Auto);
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/chatwatch.toml");
    let c = Config::load_with_env(&path, no_env()).unwrap();
    assert!(c.accounts.contains_key("main"));
}
