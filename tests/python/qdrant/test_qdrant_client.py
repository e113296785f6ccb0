"""Round trip through abi's Qdrant-compatible API with the official `qdrant-client`.

Uses the `abi_http` fixture of tests/python/conftest.py: a fresh abi-node, or the one at
$ABI_HTTP (e.g. http://127.0.0.1:8080). Requirements: `pip install qdrant-client pytest`.
"""

import uuid

import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse


@pytest.fixture()
def client(abi_http):
    # Default compatibility check on: abi answers `GET /` with the API version it follows.
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = QdrantClient(url=abi_http, prefer_grpc=False, timeout=60)
    yield c
    c.close()


@pytest.fixture()
def collection(client):
    name = "pytest-" + uuid.uuid4().hex[:8]
    assert client.create_collection(
        collection_name=name,
        vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE),
        shard_number=2,
        hnsw_config=models.HnswConfigDiff(m=16, ef_construct=100),
    )
    yield name
    client.delete_collection(collection_name=name)


def vec(i):
    return [1.0, i / 10.0, (i % 3) / 3.0, 0.5]


def test_round_trip(client, collection):
    assert client.collection_exists(collection)
    names = [c.name for c in client.get_collections().collections]
    assert collection in names
    info = client.get_collection(collection)
    assert info.config.params.vectors.size == 4
    assert info.config.params.shard_number == 2
    assert info.config.hnsw_config.m == 16

    u = str(uuid.uuid4())
    points = [
        models.PointStruct(id=i, vector=vec(i), payload={"color": "red" if i % 2 else "blue", "n": i})
        for i in range(40)
    ]
    points.append(models.PointStruct(id=u, vector=vec(7), payload={"color": "green", "n": 100}))
    res = client.upsert(collection_name=collection, points=points, wait=True)
    assert res.status == models.UpdateStatus.COMPLETED
    assert client.count(collection_name=collection, exact=True).count == 41

    # Nearest neighbours with a payload filter (equality + range), payload returned.
    flt = models.Filter(
        must=[
            models.FieldCondition(key="color", match=models.MatchValue(value="red")),
            models.FieldCondition(key="n", range=models.Range(gte=5, lt=30)),
        ]
    )
    hits = client.query_points(
        collection_name=collection,
        query=vec(12),
        query_filter=flt,
        limit=5,
        with_payload=True,
        search_params=models.SearchParams(hnsw_ef=64),
    ).points
    assert len(hits) == 5
    assert all(h.payload["color"] == "red" and 5 <= h.payload["n"] < 30 for h in hits)
    assert hits[0].score >= hits[-1].score

    # Unfiltered: the exact vector of point 12 comes first with cosine ~1.
    top = client.query_points(collection_name=collection, query=vec(12), limit=3).points
    assert top[0].id == 12 and abs(top[0].score - 1.0) < 1e-4

    # match-any and a UUID id.
    anyf = models.Filter(must=[models.FieldCondition(key="color", match=models.MatchAny(any=["green"]))])
    g = client.query_points(collection_name=collection, query=vec(7), query_filter=anyf, limit=3).points
    assert [h.id for h in g] == [u]

    # Batch query.
    batch = client.query_batch_points(
        collection_name=collection,
        requests=[models.QueryRequest(query=vec(i), limit=2) for i in (3, 20)],
    )
    assert [b.points[0].id for b in batch] == [3, 20]

    # Retrieve, delete, count, scroll.
    got = client.retrieve(collection_name=collection, ids=[1, 2, u], with_vectors=True)
    assert sorted(str(p.id) for p in got) == sorted(["1", "2", u])
    assert all(len(p.vector) == 4 for p in got)
    client.delete(collection_name=collection, points_selector=models.PointIdsList(points=[1, 2, u]), wait=True)
    assert client.count(collection_name=collection, exact=True).count == 38
    assert client.retrieve(collection_name=collection, ids=[1, 2]) == []
    red = models.Filter(must=[models.FieldCondition(key="color", match=models.MatchValue(value="red"))])
    assert client.count(collection_name=collection, count_filter=red, exact=True).count == 19

    seen, offset = [], None
    while True:
        page, offset = client.scroll(collection_name=collection, limit=7, offset=offset, with_payload=False)
        seen.extend(p.id for p in page)
        if offset is None:
            break
    assert sorted(seen) == seen and len(seen) == 38

    # Delete by filter.
    client.delete(collection_name=collection, points_selector=models.FilterSelector(filter=red), wait=True)
    assert client.count(collection_name=collection, exact=True).count == 19


def test_bad_input_is_4xx(client, collection):
    with pytest.raises(UnexpectedResponse) as e:
        client.upsert(collection_name=collection, points=[models.PointStruct(id=1, vector=[1.0, 2.0])], wait=True)
    assert e.value.status_code == 400
    # A batch with one bad point changes nothing.
    with pytest.raises(UnexpectedResponse):
        client.upsert(
            collection_name=collection,
            points=[models.PointStruct(id=1, vector=vec(1)), models.PointStruct(id=2, vector=[0.0, 0.0, 0.0, 0.0])],
            wait=True,
        )
    assert client.count(collection_name=collection, exact=True).count == 0
    with pytest.raises(UnexpectedResponse) as e:
        client.create_collection(
            collection_name=collection,
            vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE),
        )
    assert e.value.status_code == 409
    with pytest.raises(UnexpectedResponse) as e:
        client.get_collection("no-such-collection-" + uuid.uuid4().hex[:6])
    assert e.value.status_code == 404
    with pytest.raises(UnexpectedResponse) as e:
        client.query_points(collection_name=collection, query=[1.0, 2.0, 3.0], limit=1)
    assert e.value.status_code == 400
