//! `abi-node demo --nodes N`: a local cluster of separate processes in one
//! command (certificates made, ports chosen, pid files and logs under DIR).

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};

use anyhow::Context;

fn free_port() -> anyhow::Result<u16> {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

pub fn main(nodes: usize, dir: &Path) -> ExitCode {
    match run(nodes, dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(nodes: usize, dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=16).contains(&nodes),
        "--nodes must be between 1 and 16"
    );
    let exe = std::env::current_exe().context("locating abi-node")?;
    let ca = dir.join("ca");
    if !ca.join("ca.pem").exists() {
        abi_transport::certs::init_ca(&ca).context("creating the demo CA")?;
    }
    let ports: Vec<(u16, u16)> = (0..nodes)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let seeds: Vec<String> = ports
        .iter()
        .map(|(q, _)| format!("127.0.0.1:{q}"))
        .collect();
    let mut children: Vec<(String, Child)> = Vec::new();
    for (i, (quic, http)) in ports.iter().enumerate() {
        let id = format!("node-{}", i + 1);
        let ndir = dir.join(&id);
        let tls = ndir.join("tls");
        if !tls.join("node.pem").exists() {
            let nid = abi_protocol::NodeId::new(id.clone())?;
            abi_transport::certs::issue(&ca, &nid, &tls)
                .with_context(|| format!("certificate for {id}"))?;
        }
        std::fs::create_dir_all(&ndir)?;
        let log = std::fs::File::create(ndir.join("node.log"))?;
        let child = Command::new(&exe)
            .arg("run")
            .args(["--node-id", &id])
            .args(["--listen", &format!("127.0.0.1:{quic}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .arg("--data-dir")
            .arg(ndir.join("data"))
            .arg("--tls-dir")
            .arg(&tls)
            .args(["--seeds", &seeds.join(",")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {id}"))?;
        std::fs::write(ndir.join("pid"), child.id().to_string())?;
        println!(
            "{id}: http://127.0.0.1:{http}/dashboard  (QUIC 127.0.0.1:{quic}, log {})",
            ndir.join("node.log").display()
        );
        children.push((id, child));
    }
    println!(
        "cluster of {nodes} running; nodes: curl http://127.0.0.1:{}/v1/cluster/nodes ; Ctrl-C stops all",
        ports[0].1
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    println!("stopping {nodes} nodes");
    for (_, c) in &children {
        // SIGTERM: each node shuts down gracefully.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
    }
    for (id, mut c) in children {
        let status = c.wait()?;
        println!("{id}: {status}");
        let _ = std::fs::remove_file(dir.join(&id).join("pid"));
    }
    Ok(())
}
