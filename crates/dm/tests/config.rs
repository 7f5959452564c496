//! Client configuration: login files, URLs and TLS options are checked before anything is sent.

use dm::client::{parse_login_line, read_login_file};
use dm::{ClientConfig, DmClient, DmError};

#[test]
fn login_lines_are_username_bar_password() {
    assert_eq!(
        parse_login_line("alice|se|cret\n"),
        Some(("alice".into(), "se|cret".into()))
    );
    assert_eq!(parse_login_line("no bar"), None);
    assert_eq!(parse_login_line("|password"), None);
}

#[test]
fn a_login_file_is_read_from_its_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("login");
    std::fs::write(&path, "dmuser|pa ss\nignored|line\n").unwrap();
    assert_eq!(
        read_login_file(&path).unwrap(),
        ("dmuser".into(), "pa ss".into())
    );
    std::fs::write(&path, "just-a-name\n").unwrap();
    let err = read_login_file(&path).unwrap_err();
    assert!(err.to_string().contains("username|password"), "{err}");
    let err = read_login_file(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, DmError::Config(_)), "{err}");
}

#[test]
fn the_dm_prefix_is_added_once() {
    for url in [
        "http://127.0.0.1:22236",
        "http://127.0.0.1:22236/",
        "http://127.0.0.1:22236/dm",
        "http://127.0.0.1:22236/dm/",
    ] {
        let client = DmClient::new(ClientConfig::new(url, "u", "p")).unwrap();
        assert_eq!(
            client.base_url().as_str(),
            "http://127.0.0.1:22236/dm",
            "{url}"
        );
    }
}

#[test]
fn bad_urls_and_ca_files_are_configuration_errors() {
    for url in ["not a url", "ftp://host/dm", "mailto:someone"] {
        let err = DmClient::new(ClientConfig::new(url, "u", "p")).unwrap_err();
        assert!(matches!(err, DmError::Config(_)), "{url}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let mut config = ClientConfig::new("https://127.0.0.1:22236", "u", "p");
    config.ca_file = Some(ca_file);
    let err = DmClient::new(config).unwrap_err();
    assert!(matches!(err, DmError::Config(_)), "{err}");
    let mut config = ClientConfig::new("https://127.0.0.1:22236", "u", "secret-password");
    config.accept_invalid_certs = true;
    let client = DmClient::new(config).unwrap();
    assert!(
        !format!("{client:?}").contains("secret-password"),
        "Debug hides the password"
    );
}
