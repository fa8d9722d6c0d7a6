"""The official `ollama` and `openai` Python packages, unchanged, against embedfn."""

import numpy as np
import ollama
import openai

from parity import close
from reference import Model


def test_ollama_client(minilm, models_dir):
    ref = Model(models_dir / "minilm")
    client = ollama.Client(host=minilm.url)
    r = client.embed(model="minilm", input=["Hello world", "Bonjour"])
    close(r.embeddings[0], ref.embed("Hello world"))
    close(r.embeddings[1], ref.embed("Bonjour"))
    assert r.prompt_eval_count > 0
    close(client.embed(model="minilm:latest", input="x", dimensions=32).embeddings[0], ref.embed("x", dims=32))
    close(client.embeddings(model="minilm", prompt="Hello world").embedding, ref.embed("Hello world"))
    names = [m.model for m in client.list().models]
    assert names == ["minilm"]
    show = client.show("minilm")
    assert "embedding" in show.capabilities
    assert show.modelinfo["bert.embedding_length"] == 384
    assert [m.model for m in client.ps().models] == ["minilm"]
    try:
        client.embed(model="missing-model", input="x")
        raise AssertionError("expected an error")
    except ollama.ResponseError as e:
        assert e.status_code == 404
        assert "not found" in e.error


def test_openai_client_default_base64_and_float(minilm, models_dir):
    ref = Model(models_dir / "minilm")
    client = openai.OpenAI(base_url=minilm.url + "/v1", api_key="unused")
    texts = ["Hello world", "The quick brown fox"]
    r = client.embeddings.create(model="minilm", input=texts)  # the SDK asks for base64
    for d, t in zip(r.data, texts):
        close(d.embedding, ref.embed(t))
    assert r.usage.prompt_tokens == sum(len(ref.ids(t)) for t in texts)
    r = client.embeddings.create(model="minilm", input="Hello world", encoding_format="float", dimensions=128)
    close(r.data[0].embedding, ref.embed("Hello world", dims=128))
    assert [m.id for m in client.models.list().data] == ["minilm"]
    try:
        client.embeddings.create(model="minilm", input=[])
        raise AssertionError("expected an error")
    except openai.BadRequestError as e:
        assert "must not be empty" in str(e)


def test_openai_client_jina_task_via_extra_body(jina, models_dir):
    ref = Model(models_dir / "jina-embed-tiny")
    client = openai.OpenAI(base_url=jina.url + "/v1", api_key="unused")
    r = client.embeddings.create(model="jina-embed-tiny", input="query text",
                                 extra_body={"task": "retrieval.query"})
    close(np.array(r.data[0].embedding), ref.embed("query text", task="retrieval.query"))
