"""Real client libraries, unchanged, against embedfn: the official `ollama` and `openai`
packages, LangChain (standard tests), LlamaIndex and the Cohere SDK; vectors and scores are
compared with the reference."""

import cohere
import numpy as np
import ollama
import openai
import pytest
from langchain_ollama import OllamaEmbeddings
from langchain_openai import OpenAIEmbeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from llama_index.embeddings.ollama import OllamaEmbedding

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


# --- LangChain's standard tests, LlamaIndex, Cohere -----------------------------------------------
# LangChain's own `EmbeddingsIntegrationTests` (package langchain-tests) run unchanged against
# embedfn for OllamaEmbeddings and OpenAIEmbeddings; each class adds a check of the vectors
# against the reference. OpenAIEmbeddings needs `check_embedding_ctx_length=False`: by default it
# tokenizes with tiktoken and sends OpenAI token ids, which mean nothing to another vocabulary.


class _Standard(EmbeddingsIntegrationTests):
    """The standard suite, unchanged (its async tests run under pytest-asyncio), plus the
    reference check."""

    pytestmark = pytest.mark.asyncio

    def test_vectors_match_the_reference(self, model, models_dir):
        ref = Model(models_dir / "minilm")
        close(model.embed_query("Hello world"), ref.embed("Hello world"))
        for v, t in zip(model.embed_documents(["foo", "bar baz"]), ["foo", "bar baz"]):
            close(v, ref.embed(t))


class TestLangChainOllamaEmbeddings(_Standard):
    @property
    def embeddings_class(self):
        return OllamaEmbeddings

    @pytest.fixture
    def model(self, minilm):
        return OllamaEmbeddings(model="minilm", base_url=minilm.url)


class TestLangChainOpenAIEmbeddings(_Standard):
    @property
    def embeddings_class(self):
        return OpenAIEmbeddings

    @pytest.fixture
    def model(self, minilm):
        return OpenAIEmbeddings(model="minilm", base_url=minilm.url + "/v1", api_key="unused",
                                check_embedding_ctx_length=False)


def test_llamaindex_ollama_embedding(minilm, models_dir):
    ref = Model(models_dir / "minilm")
    emb = OllamaEmbedding(model_name="minilm", base_url=minilm.url)
    close(emb.get_text_embedding("Hello world"), ref.embed("Hello world"))
    close(emb.get_query_embedding("a query"), ref.embed("a query"))
    for v, t in zip(emb.get_text_embedding_batch(["foo", "bar"]), ["foo", "bar"]):
        close(v, ref.embed(t))


def test_cohere_sdk_v1_and_v2_rerank(jina, models_dir):
    ref = Model(models_dir / "jina-rerank-tiny")
    query, docs = "what is a panda?", ["hi", "The giant panda is a bear.", "pandas is a library"]
    want = ref.rerank_scores(query, docs)
    order = sorted(range(3), key=lambda i: -want[i])
    v1 = cohere.Client(api_key="unused", base_url=jina.url).rerank(
        model="jina-rerank-tiny", query=query, documents=docs, top_n=2)
    assert [r.index for r in v1.results] == order[:2]
    for r in v1.results:
        assert abs(r.relevance_score - want[r.index]) < 1e-5
    v2 = cohere.ClientV2(api_key="unused", base_url=jina.url).rerank(
        model="jina-rerank-tiny", query=query, documents=docs)
    assert [r.index for r in v2.results] == order
    for r in v2.results:
        assert abs(r.relevance_score - want[r.index]) < 1e-5
