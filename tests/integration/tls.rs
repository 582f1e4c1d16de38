//! TLS with a private CA, as many on-premise GWS installations have: the daemon trusts the CA
//! named by `ca_file` and refuses the same server without it. The server is the GWS simulator
//! behind a TLS terminator on loopback, with a certificate for `localhost` signed by a CA made
//! by the test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::Daemon;
use chatwatch::sim::{ChatOffer, SimConfig};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio_rustls::rustls;

/// Makes a CA and a `localhost` certificate it signs; returns (CA PEM, cert DER, key DER).
fn certificates() -> (String, Vec<u8>, Vec<u8>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), cert.der().to_vec(), key.serialize_der())
}

/// Terminates TLS on a free loopback port and forwards the plain bytes to `upstream`.
async fn tls_terminator(upstream: SocketAddr, cert: Vec<u8>, key: Vec<u8>) -> u16 {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_through_ca_file_and_refused_without_it() {
    let sim = crate::support::sim::start(SimConfig {
        bayeux_timeout: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let (ca_pem, cert, key) = certificates();
    let port = tls_terminator(sim.addr(), cert, key).await;
    let url = format!("https://localhost:{port}");

    // With the CA: logs in, subscribes and receives over TLS.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("gws-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let config = dir.path().join("chatwatch.toml");
    let text = Daemon::gws_config(&url, "password1", dir.path()).replacen(
        "use_env_proxy = false",
        &format!("use_env_proxy = false\nca_file = \"{}\"", ca_file.display()),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let trusted = Daemon::start_with_config(dir, &config);
    trusted.wait_listening(1).await;
    let chat = sim.offer_chat("agent1", ChatOffer::new("Over TLS"));
    trusted
        .wait_event("the offer", |e| e["chat"]["id"] == chat.as_str())
        .await;

    // Without it: the certificate is refused, the log says so, and nothing gets in.
    let untrusted = Daemon::start_gws(&url, "password1");
    untrusted.wait_log("login failed; retrying", 0).await;
    let failure = untrusted
        .log()
        .into_iter()
        .find(|l| l["message"] == "login failed; retrying")
        .unwrap();
    let error = failure["error"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        error.contains("certificate") || error.contains("issuer"),
        "{error}"
    );
    assert_eq!(
        untrusted.count_log("listening: connected and subscribed"),
        0
    );
}
