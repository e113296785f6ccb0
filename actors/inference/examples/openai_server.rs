//! A node with only the inference pools and the OpenAI routes (`actors/gateway/src/routes/openai.rs`,
//! compiled in unchanged), for running the Python `openai` client tests without the full node:
//!
//! `cargo run -p abi-inference --example openai_server -- 127.0.0.1:8089 models`
//! then `ABI_HTTP=http://127.0.0.1:8089 pytest tests/python/openai`

use std::time::Duration;

use abi_runtime::{Node, NodeId, Strategy, SupervisorSpec};
use actix_web::{App, HttpServer, web};

#[path = "../../gateway/src/routes/openai.rs"]
mod openai;

pub use abi_gateway::ApiError;

/// The part of the gateway's state the OpenAI routes use.
pub struct GatewayState {
    /// The local node.
    pub node: Node,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8089".into());
    let models = args.get(2).cloned().unwrap_or_else(|| "models".into());
    let node = Node::new(NodeId::new("dev")?, 1);
    let root = node
        .start_root(
            SupervisorSpec::new(Strategy::OneForOne)
                .child(abi_inference::child_spec(models, Vec::new())),
        )
        .await?;
    let state = web::Data::new(GatewayState { node });
    println!("serving on http://{addr}");
    HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(openai::configure)
    })
    .workers(2)
    .bind(&addr)?
    .run()
    .await?;
    root.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
