//! Security: certificates, identities, hostile frames and version mismatch.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_transport::certs::{self, TlsFiles};
use abi_transport::envelope::{Hello, PROTOCOL_VERSION, ReplyHeader, RequestHeader};
use abi_transport::{RemoteError, RequestMeta, Transport, frame, tls};
use common::*;
use quinn::crypto::rustls::QuicClientConfig;

fn secs(n: u64) -> Instant {
    Instant::now() + Duration::from_secs(n)
}

#[test]
fn certificates_layout_permissions_and_identity() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca_dir = dir.path().join("ca");
    certs::init_ca(&ca_dir).expect("init");
    assert!(matches!(
        certs::init_ca(&ca_dir),
        Err(certs::CertError::Exists(_))
    ));
    let out = dir.path().join("tls-a");
    certs::issue(&ca_dir, &id("node-a"), &out).expect("issue");
    for f in ["ca.pem", "node.pem", "node.key"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [ca_dir.join("ca.key"), out.join("node.key")] {
            let mode = std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
    // Issuing again into the same dir refuses to overwrite.
    assert!(matches!(
        certs::issue(&ca_dir, &id("node-a"), &out),
        Err(certs::CertError::Exists(_))
    ));

    let f = TlsFiles::load(&out).expect("load");
    tls::verify_chain(&f.ca, &f.chain[0]).expect("chains to the CA");
    tls::verify_peer_id(&f.chain[0], &id("node-a")).expect("carries its id");
    assert!(tls::verify_peer_id(&f.chain[0], &id("node-b")).is_err());

    let other = dir.path().join("other-ca");
    certs::init_ca(&other).expect("init other");
    let g = files(&other, "node-a");
    assert!(
        tls::verify_chain(&f.ca, &g.chain[0]).is_err(),
        "other CA must not verify"
    );

    // A node refuses to start with a certificate for another id.
    let e =
        Transport::bind(id("node-b"), 1, &f, config(), Arc::new(handler)).expect_err("wrong id");
    assert!(e.to_string().contains("node-b"), "{e}");
}

#[tokio::test]
async fn node_with_certificate_from_another_ca_cannot_connect() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("good");
    let evil = dir.path().join("evil");
    ca(&good);
    ca(&evil);
    let a = bind(&files(&good, "node-a"), "node-a", 1);
    let mallory = bind(&files(&evil, "node-m"), "node-m", 1);
    let a_addr = a.local_addr().expect("addr");

    // Mallory dials a: refused (a rejects its client cert, and mallory rejects a's server cert).
    let e = mallory.connect_addr(a_addr).await.expect_err("refused");
    assert!(matches!(e, RemoteError::Refused(_)), "{e}");
    // a dials mallory: refused too.
    let e = a
        .connect_addr(mallory.local_addr().expect("addr"))
        .await
        .expect_err("refused");
    assert!(matches!(e, RemoteError::Refused(_)), "{e}");
    assert!(a.connected().is_empty());

    // a is unharmed: a legitimate peer still works.
    let b = bind(&files(&good, "node-b"), "node-b", 2);
    mesh(&[&a, &b]);
    let r = b
        .ask(
            path("node-a", "mirror"),
            "t",
            b"ok".to_vec(),
            secs(5),
            RequestMeta::default(),
        )
        .await
        .expect("ask");
    assert_eq!(r, b"ok");
    for t in [a, b, mallory] {
        t.shutdown();
    }
}

/// A raw QUIC client with a valid cluster certificate that says whatever it likes.
async fn raw_connect(files: &TlsFiles, to: SocketAddr) -> quinn::Connection {
    let mut ep = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client");
    let tls = tls::client_config(files).expect("tls");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).expect("quic tls"),
    )));
    ep.connect(to, "peer.node.abi")
        .expect("connect")
        .await
        .expect("handshake")
}

async fn send_hello(conn: &quinn::Connection, hello: &Hello) -> Result<Hello, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&frame::encode_vec(hello, b"").expect("encode"))
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    match frame::read_frame::<Hello, _>(&mut recv, 0).await {
        Ok((h, _)) => Ok(h),
        Err(_) => Err(match conn.closed().await {
            quinn::ConnectionError::ApplicationClosed(c) => {
                String::from_utf8_lossy(&c.reason).into_owned()
            }
            other => other.to_string(),
        }),
    }
}

#[tokio::test]
async fn valid_certificate_claiming_another_id_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let a = bind(&files(dir.path(), "node-a"), "node-a", 1);
    let c_files = files(dir.path(), "node-c");

    // node-c's certificate, claiming to be node-b.
    let conn = raw_connect(&c_files, a.local_addr().expect("addr")).await;
    let e = send_hello(
        &conn,
        &Hello {
            version: PROTOCOL_VERSION,
            node: id("node-b"),
            incarnation: 1,
        },
    )
    .await
    .expect_err("refused");
    assert!(e.contains("not valid for node id \"node-b\""), "{e}");
    assert!(a.connected().is_empty());

    // Dialling an address expecting node-b but finding node-c is refused too.
    let c = bind(&c_files, "node-c", 1);
    a.add_peer(id("node-b"), c.local_addr().expect("addr"));
    let e = a
        .ask(
            path("node-b", "echo"),
            "t",
            vec![],
            secs(5),
            RequestMeta::default(),
        )
        .await
        .expect_err("wrong node at address");
    assert!(e.to_string().contains("expected node node-b"), "{e}");
    a.shutdown();
    c.shutdown();
}

#[tokio::test]
async fn version_mismatch_fails_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let a = bind(&files(dir.path(), "node-a"), "node-a", 1);
    let conn = raw_connect(&files(dir.path(), "node-b"), a.local_addr().expect("addr")).await;
    let e = send_hello(
        &conn,
        &Hello {
            version: PROTOCOL_VERSION + 1,
            node: id("node-b"),
            incarnation: 1,
        },
    )
    .await
    .expect_err("refused");
    assert_eq!(
        e,
        format!(
            "abi protocol version mismatch: this node speaks {PROTOCOL_VERSION}, peer speaks {}",
            PROTOCOL_VERSION + 1
        )
    );
    a.shutdown();
}

#[tokio::test]
async fn oversize_and_malformed_frames_close_only_their_stream() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let a = bind(&files(dir.path(), "node-a"), "node-a", 1);
    let conn = raw_connect(&files(dir.path(), "node-b"), a.local_addr().expect("addr")).await;
    let theirs = send_hello(
        &conn,
        &Hello {
            version: PROTOCOL_VERSION,
            node: id("node-b"),
            incarnation: 1,
        },
    )
    .await
    .expect("accepted");
    assert_eq!(theirs.node, id("node-a"));

    // 1. Header length of 4 GiB.
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("write");
    let err = recv.read_to_end(1024).await.expect_err("stream closed");
    assert!(err.to_string().contains("reset by peer"), "{err}");

    // 2. A valid header announcing a 1 GiB payload (limit 16 MiB): refused before reading it.
    let header = RequestHeader {
        version: PROTOCOL_VERSION,
        from: None,
        to: path("node-a", "mirror"),
        type_name: "t".into(),
        corr_id: 1,
        deadline_ms: 5000,
        traceparent: None,
        want_reply: true,
    };
    let mut bytes = frame::encode_vec(&header, b"").expect("encode");
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&(1u32 << 30).to_be_bytes());
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&bytes).await.expect("write");
    let err = recv.read_to_end(1024).await.expect_err("stream closed");
    assert!(err.to_string().contains("reset by peer"), "{err}");

    // 3. Garbage header.
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let mut junk = 5u32.to_be_bytes().to_vec();
    junk.extend_from_slice(&[0xff; 5]);
    junk.extend_from_slice(&0u32.to_be_bytes());
    send.write_all(&junk).await.expect("write");
    let _ = send.finish();
    let err = recv.read_to_end(1024).await.expect_err("stream closed");
    assert!(err.to_string().contains("reset by peer"), "{err}");

    // 4. The same connection still serves a well-formed request.
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&frame::encode_vec(&header, b"alive").expect("encode"))
        .await
        .expect("write");
    send.finish().expect("finish");
    let (reply, body): (ReplyHeader, Vec<u8>) =
        frame::read_frame(&mut recv, 1024).await.expect("reply");
    assert_eq!(reply.corr_id, 1);
    assert_eq!(reply.status, Ok(()));
    assert_eq!(body, b"alive");
    assert!(conn.close_reason().is_none(), "connection must survive");

    // 5. And the node still serves other peers.
    let c = bind(&files(dir.path(), "node-c"), "node-c", 1);
    mesh(&[&a, &c]);
    let r = c
        .ask(
            path("node-a", "mirror"),
            "t",
            b"ok".to_vec(),
            secs(5),
            RequestMeta::default(),
        )
        .await
        .expect("ask");
    assert_eq!(r, b"ok");
    a.shutdown();
    c.shutdown();
}
