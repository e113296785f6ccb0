//! `abi-node cluster status|add-learner|promote|remove`: the Raft admin API of a running
//! node, over its HTTP gateway (so the same keys and roles apply as for any client).

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{ClusterCommand, ClusterTarget};

/// Runs one `cluster` subcommand; prints the group status (JSON) it answers with.
pub fn main(target: &ClusterTarget, command: ClusterCommand) -> ExitCode {
    let base = target.url.trim_end_matches('/');
    let (method, path, body) = match command {
        ClusterCommand::Status => ("GET", "/v1/cluster/raft".to_string(), None),
        ClusterCommand::AddLearner { node, addr } => (
            "POST",
            "/v1/cluster/raft/learners".into(),
            Some(serde_json::json!({ "node": node, "addr": addr })),
        ),
        ClusterCommand::Promote { nodes } => (
            "POST",
            "/v1/cluster/raft/voters".into(),
            Some(serde_json::json!({ "nodes": nodes })),
        ),
        ClusterCommand::Remove { node } => {
            ("DELETE", format!("/v1/cluster/raft/members/{node}"), None)
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A learner is answered once it caught up, which can take a while.
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let url = format!("{base}{path}");
    let auth = target.api_key.as_ref().map(|k| format!("Bearer {k}"));
    let res = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = agent.delete(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        (_, body) => {
            let mut r = agent.post(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send_json(body.unwrap_or_default())
        }
    };
    let mut resp = match res {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot reach {base}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = resp.status();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if status.is_success() {
        println!("{pretty}");
        ExitCode::SUCCESS
    } else {
        eprintln!("{method} {path}: HTTP {}\n{pretty}", status.as_u16());
        ExitCode::FAILURE
    }
}
