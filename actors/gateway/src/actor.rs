//! The gateway actor: owns the actix-web server; stopping the actor stops it.

use std::net::SocketAddr;
use std::time::Duration;

use abi_runtime::{ChildSpec, StartError, Started};
use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::{GatewayState, error, routes};

/// How to serve HTTP.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// actix worker threads.
    pub workers: usize,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Deadline for forwarded requests.
    pub request_timeout: Duration,
    /// Authentication and limits (shared so the node can reload keys on SIGHUP).
    pub security: std::sync::Arc<crate::auth::middleware::Security>,
    /// HTTPS only when set (see [`crate::tls::server_config`]); plain HTTP otherwise.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// CORS origins; empty = no CORS headers at all.
    pub cors_origins: Vec<String>,
}

/// The supervised gateway actor.
#[derive(Debug)]
pub struct GatewayActor;

/// Messages to the gateway actor.
#[derive(Debug)]
pub enum GatewayMsg {
    /// The server future ended on its own (bind loss, panic): fail so the supervisor restarts us.
    ServerEnded(String),
}

/// The running server.
pub struct GatewayRun {
    handle: ServerHandle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GatewayRun {
    /// Also runs when the actor is killed (no `post_stop`): the server must not
    /// outlive its actor, or a restarted gateway could not bind again.
    fn drop(&mut self) {
        // `stop` sends the command at once; the returned future only waits.
        drop(self.handle.stop(false));
        self.task.abort();
    }
}

impl std::fmt::Debug for GatewayRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayRun").finish()
    }
}

impl Actor for GatewayActor {
    type Msg = GatewayMsg;
    type State = GatewayRun;
    type Arguments = (GatewayConfig, GatewayState);

    async fn pre_start(
        &self,
        myself: ActorRef<GatewayMsg>,
        (cfg, state): (GatewayConfig, GatewayState),
    ) -> Result<GatewayRun, ActorProcessingErr> {
        // A previous incarnation may still be releasing the port: retry briefly.
        let mut attempt = 0;
        let listener = loop {
            match std::net::TcpListener::bind(cfg.listen) {
                Ok(l) => break l,
                Err(e) if attempt < 40 && e.kind() == std::io::ErrorKind::AddrInUse => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(format!("gateway cannot bind {}: {e}", cfg.listen).into()),
            }
        };
        let data = web::Data::new(state);
        let max_body = cfg.max_body_bytes;
        let cors_origins = cfg.cors_origins.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(|e, _| error::extractor_error(e)),
                )
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(
                    web::PathConfig::default().error_handler(|e, _| error::extractor_error(e)),
                )
                .app_data(
                    web::QueryConfig::default().error_handler(|e, _| error::extractor_error(e)),
                )
                .wrap(actix_web::middleware::from_fn(
                    crate::auth::middleware::guard,
                ))
                .wrap(actix_web::middleware::from_fn(crate::http_metrics::record))
                // Outermost: preflights are answered before authentication.
                .wrap(actix_web::middleware::Condition::new(
                    !cors_origins.is_empty(),
                    crate::cors::middleware(&cors_origins),
                ))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .workers(cfg.workers.max(1))
        .disable_signals()
        .shutdown_timeout(5);
        // With TLS the port speaks only TLS: a plain HTTP request fails the handshake.
        let server = match &cfg.tls {
            Some(tls) => server.listen_rustls_0_23(listener, (**tls).clone()),
            None => server.listen(listener),
        }
        .map_err(|e| format!("gateway cannot listen on {}: {e}", cfg.listen))?
        .run();
        let handle = server.handle();
        tracing::info!(listen = %cfg.listen, tls = cfg.tls.is_some(), "gateway listening");
        // The server task belongs to this actor: stopped in post_stop, and its
        // unexpected end fails the actor so the supervisor restarts it.
        let task = tokio::spawn(async move {
            let reason = match server.await {
                Ok(()) => "server stopped".to_string(),
                Err(e) => format!("server error: {e}"),
            };
            let _ = myself.send_message(GatewayMsg::ServerEnded(reason));
        });
        Ok(GatewayRun { handle, task })
    }

    async fn handle(
        &self,
        _myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        _state: &mut GatewayRun,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GatewayMsg::ServerEnded(reason) => Err(reason.into()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<GatewayMsg>,
        state: &mut GatewayRun,
    ) -> Result<(), ActorProcessingErr> {
        // Graceful: stop accepting, let in-flight requests finish.
        state.handle.stop(true).await;
        state.task.abort();
        Ok(())
    }
}

/// The gateway as a supervised child named `gateway`.
pub fn child_spec(cfg: GatewayConfig, request_timeout: Duration) -> ChildSpec {
    ChildSpec::worker(abi_protocol::paths::GATEWAY, move |ctx| {
        let cfg = cfg.clone();
        async move {
            let state = GatewayState {
                node: ctx.node.clone(),
                request_timeout,
                live: Default::default(),
                security: cfg.security.clone(),
                holders: Default::default(),
                http_metrics: crate::http_metrics::HttpMetrics::of(&ctx.node),
            };
            let r = ctx
                .spawn(GatewayActor, (cfg, state))
                .await
                .map_err(|e| StartError::msg(format!("gateway: {e}")))?;
            Ok(Started::unaddressed(r.get_cell()))
        }
    })
    .shutdown(Duration::from_secs(10))
}
