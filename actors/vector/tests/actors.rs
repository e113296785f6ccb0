//! The vector subsystem on the real runtime: manager + supervised shard actors, restart from disk.

use std::time::Duration;

use abi_protocol::NodeId;
use abi_protocol::health::Check;
use abi_protocol::vector::{
    CollectionConfig, Condition, Count, CreateCollection, DeleteCollection, DeletePoints, Distance,
    Filter, FsyncPolicy, GetCollection, GetPoints, HnswParams, ListCollections, MANAGER_PATH,
    MatchValue, PointId, PointInput, Scroll, Search, SearchQuery, Upsert, VectorError,
};
use abi_runtime::{Node, RootHandle, Strategy, SupervisorSpec};

const T: Duration = Duration::from_secs(30);

fn config(name: &str, shards: u32) -> CollectionConfig {
    CollectionConfig {
        name: name.into(),
        dim: 3,
        distance: Distance::Cosine,
        shards,
        replication: 1,
        write_consistency: 0,
        hnsw: HnswParams::default(),
        fsync: FsyncPolicy::GroupCommitMs(2),
        embed_with: None,
    }
}

fn points(range: std::ops::Range<u64>) -> Vec<PointInput> {
    range
        .map(|i| PointInput {
            id: PointId::Num(i),
            vector: vec![1.0, i as f32 / 100.0, (i % 7) as f32 / 7.0],
            payload_json: Some(format!(
                r#"{{"color":"{}"}}"#,
                if i % 3 == 0 { "red" } else { "blue" }
            )),
        })
        .collect()
}

fn query(v: Vec<f32>, limit: u32, filter: Option<Filter>) -> SearchQuery {
    SearchQuery {
        vector: v,
        limit,
        offset: 0,
        ef: Some(64),
        filter,
        with_payload: true,
        with_vector: false,
        score_threshold: None,
    }
}

async fn start(dir: &std::path::Path, declared: Vec<CollectionConfig>) -> (Node, RootHandle) {
    let node = Node::new(NodeId::new("n1").expect("id"), 1);
    let root = node
        .start_root(
            SupervisorSpec::new(Strategy::OneForOne).child(abi_vector::child_spec(dir, declared)),
        )
        .await
        .expect("root");
    // Wait until the manager bootstrapped the declared collections.
    let api = node.path(MANAGER_PATH).expect("path");
    for _ in 0..500 {
        if node
            .ask(&api, Check, T)
            .await
            .map(|r| r.ready)
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (node, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_points_and_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (node, root) = start(tmp.path(), vec![config("declared", 2)]).await;
    let api = node.path(MANAGER_PATH).expect("path");

    assert_eq!(
        node.ask(&api, ListCollections, T).await.expect("list"),
        vec!["declared".to_string()]
    );
    let info = node
        .ask(
            &api,
            CreateCollection {
                config: config("docs", 4),
            },
            T,
        )
        .await
        .expect("ask")
        .expect("create");
    assert_eq!(info.points, 0);
    let dup = node
        .ask(
            &api,
            CreateCollection {
                config: config("docs", 4),
            },
            T,
        )
        .await
        .expect("ask");
    assert!(matches!(dup, Err(VectorError::AlreadyExists(_))));
    let reserved = node
        .ask(
            &api,
            CreateCollection {
                config: config("api", 1),
            },
            T,
        )
        .await
        .expect("ask");
    assert!(matches!(reserved, Err(VectorError::BadRequest(_))));

    node.ask(
        &api,
        Upsert {
            collection: "docs".into(),
            points: points(0..200),
        },
        T,
    )
    .await
    .expect("ask")
    .expect("upsert");
    // A batch with one bad vector changes nothing.
    let mut bad = points(500..510);
    bad[3].vector = vec![1.0, f32::INFINITY, 0.0];
    let r = node
        .ask(
            &api,
            Upsert {
                collection: "docs".into(),
                points: bad,
            },
            T,
        )
        .await
        .expect("ask");
    assert!(matches!(r, Err(VectorError::BadRequest(_))));
    let count = |f: Option<Filter>| Count {
        collection: "docs".into(),
        filter: f,
        consistency: Default::default(),
    };
    assert_eq!(node.ask(&api, count(None), T).await.expect("ask"), Ok(200));

    let red = Filter {
        must: vec![Condition::Match {
            key: "color".into(),
            value: MatchValue::Str("red".into()),
        }],
        ..Filter::default()
    };
    let res = node
        .ask(
            &api,
            Search {
                collection: "docs".into(),
                queries: vec![
                    query(vec![1.0, 0.5, 1.0 / 7.0], 5, None),
                    query(vec![1.0, 0.5, 0.0], 5, Some(red.clone())),
                ],
                allow_partial: false,
                timeout_ms: 5000,
                consistency: Default::default(),
            },
            T,
        )
        .await
        .expect("ask")
        .expect("search");
    assert_eq!(res.hits[0][0].id, PointId::Num(50));
    assert_eq!(res.hits[1].len(), 5);
    assert!(
        res.hits[1]
            .iter()
            .all(|h| h.payload_json.as_deref() == Some(r#"{"color":"red"}"#))
    );

    node.ask(
        &api,
        DeletePoints {
            collection: "docs".into(),
            ids: vec![PointId::Num(50), PointId::Num(51)],
        },
        T,
    )
    .await
    .expect("ask")
    .expect("delete");
    assert_eq!(node.ask(&api, count(None), T).await.expect("ask"), Ok(198));
    assert_eq!(
        node.ask(&api, count(Some(red)), T).await.expect("ask"),
        Ok(66)
    );
    let got = node
        .ask(
            &api,
            GetPoints {
                collection: "docs".into(),
                ids: vec![PointId::Num(7), PointId::Num(50)],
                with_payload: false,
                with_vector: true,
                consistency: Default::default(),
            },
            T,
        )
        .await
        .expect("ask")
        .expect("get");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].vector.as_ref().map(Vec::len), Some(3));

    // Scroll pages through all points across the 4 shards in id order.
    let mut seen = Vec::new();
    let mut offset = None;
    loop {
        let page = node
            .ask(
                &api,
                Scroll {
                    collection: "docs".into(),
                    offset,
                    limit: 64,
                    filter: None,
                    with_payload: false,
                    with_vector: false,
                    consistency: Default::default(),
                },
                T,
            )
            .await
            .expect("ask")
            .expect("scroll");
        seen.extend(page.points.iter().map(|p| p.id));
        match page.next {
            Some(n) => offset = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 198);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // A stopped shard fails the search, unless partial results are allowed.
    let col_sup = node
        .supervisor(&node.path("vector/docs").expect("p"))
        .expect("collection supervisor");
    col_sup.terminate_child("shard-1").await.expect("terminate");
    let mut s = Search {
        collection: "docs".into(),
        queries: vec![query(vec![1.0, 0.5, 0.0], 3, None)],
        allow_partial: false,
        timeout_ms: 2000,
        consistency: Default::default(),
    };
    let r = node.ask(&api, s.clone(), T).await.expect("ask");
    assert!(matches!(r, Err(VectorError::Unavailable(_))), "{r:?}");
    s.allow_partial = true;
    let r = node.ask(&api, s, T).await.expect("ask").expect("partial");
    assert_eq!(r.missing_shards, vec![1]);
    assert_eq!(r.hits[0].len(), 3);

    assert_eq!(
        node.ask(
            &api,
            DeleteCollection {
                name: "declared".into()
            },
            T
        )
        .await
        .expect("ask"),
        Ok(true)
    );
    root.shutdown(Duration::from_secs(30)).await;

    // Restart on the same data dir: docs is back with its points (shard-1 too, from disk).
    let (node, root) = start(tmp.path(), vec![]).await;
    let api = node.path(MANAGER_PATH).expect("path");
    assert_eq!(
        node.ask(&api, ListCollections, T).await.expect("list"),
        vec!["docs".to_string()]
    );
    let info = node
        .ask(
            &api,
            GetCollection {
                name: "docs".into(),
            },
            T,
        )
        .await
        .expect("ask")
        .expect("get");
    assert_eq!(info.points, 198);
    assert_eq!(info.config.shards, 4);
    root.shutdown(Duration::from_secs(30)).await;
}
