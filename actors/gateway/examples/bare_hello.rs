//! The HTTP ceiling: a bare actix-web server (same crate version and worker
//! count as the gateway, no middleware) answering `GET /` with `hello`, and
//! `POST /echo` with the JSON body it was sent (parsed and written again: the
//! least a JSON API does per request, with no authentication and no work).
//! `scripts/bench-gateway.sh` measures it next to `abi-node` in the same run.
//!
//! `cargo run --release -p abi-gateway --example bare_hello -- 127.0.0.1:18080 2`

use actix_web::{App, HttpResponse, HttpServer, web};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".into());
    let workers = args
        .next()
        .and_then(|w| w.parse::<usize>().ok())
        .unwrap_or(2);
    // Same runtime shape as abi-node: actix workers under a tokio main runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        HttpServer::new(|| {
            App::new()
                .route(
                    "/",
                    web::get().to(|| async { HttpResponse::Ok().body("hello") }),
                )
                .route(
                    "/echo",
                    web::post().to(|body: web::Json<serde_json::Value>| async move {
                        HttpResponse::Ok().json(body.into_inner())
                    }),
                )
        })
        .workers(workers)
        .bind(&addr)?
        .run()
        .await
    })
}
