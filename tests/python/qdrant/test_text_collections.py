"""Text in collections: a collection created with `abi_embed_with` takes documents instead of
vectors and answers text queries, embedding through the node's inference pool (the retrieval
path of a RAG application). Uses the official qdrant-client with `cloud_inference=True`, so
`models.Document` objects are sent to the server as `{"text", "model"}` for it to embed.
"""
import json
import os
import urllib.request

from qdrant_client import QdrantClient, models

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TEXTS = os.path.join(ROOT, "..", "shared", "data", "inference", "embed_dev_texts.jsonl")
MODEL = "all-minilm-l6-v2"

# Hand-written paraphrases of dev sentences: (dev id, paraphrase).
PARAPHRASES = [
    ("dev-007", "Be wary of anyone who has the answer before grasping what was asked."),
    ("dev-013", "Going to sleep early and waking early leaves you drowsy while others are alert."),
    ("dev-017", "Stop fretting over how healthy you are."),
    ("dev-015", "Inside the courthouse, the only fairness you find is in its corridors."),
    ("dev-008", "Silence from people does not have to mean they have nothing to say."),
]


def _request(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_documents_in_paraphrase_out(abi_http):
    rows = [json.loads(line) for line in open(TEXTS, encoding="utf-8")]
    name = "fortunes_text"
    status, body = _request("PUT", f"{abi_http}/collections/{name}", {
        "vectors": {"size": 384, "distance": "Cosine"},
        "abi_embed_with": MODEL,
    })
    assert status == 200, body

    client = QdrantClient(url=abi_http, timeout=120, cloud_inference=True)
    index = {r["id"]: i for i, r in enumerate(rows)}
    for start in range(0, len(rows), 50):
        chunk = rows[start:start + 50]
        client.upsert(name, points=[
            models.PointStruct(
                id=index[r["id"]],
                vector=models.Document(text=r["text"], model=MODEL),
                payload={"dev_id": r["id"], "text": r["text"]},
            )
            for r in chunk
        ], wait=True)
    assert client.count(name).count == len(rows)

    for dev_id, paraphrase in PARAPHRASES:
        hits = client.query_points(
            name, query=models.Document(text=paraphrase, model=MODEL), limit=3,
            with_payload=True,
        ).points
        assert hits, paraphrase
        assert hits[0].payload["dev_id"] == dev_id, (
            paraphrase, [(h.payload["dev_id"], h.score) for h in hits])

    # A plain string works as a search vector too (raw HTTP).
    status, body = _request("POST", f"{abi_http}/collections/{name}/points/search", {
        "vector": PARAPHRASES[0][1], "limit": 1, "with_payload": True})
    assert status == 200, body
    assert body["result"][0]["payload"]["dev_id"] == PARAPHRASES[0][0]


def test_text_needs_an_embedding_collection(abi_http):
    name = "plain_vectors"
    status, body = _request("PUT", f"{abi_http}/collections/{name}",
                            {"vectors": {"size": 4, "distance": "Cosine"}})
    assert status == 200, body
    status, body = _request("PUT", f"{abi_http}/collections/{name}/points", {
        "points": [{"id": 1, "vector": {"text": "hello", "model": MODEL}}]})
    assert status == 400, body
    assert "embed_with" in body["error"]["message"], body
    # A document naming another model than the collection's is refused.
    status, body = _request("PUT", f"{abi_http}/collections/wrong_model", {
        "vectors": {"size": 384, "distance": "Cosine"}, "abi_embed_with": MODEL})
    assert status == 200, body
    status, body = _request("PUT", f"{abi_http}/collections/wrong_model/points", {
        "points": [{"id": 1, "vector": {"text": "hello", "model": "other-model"}}]})
    assert status == 400, body
