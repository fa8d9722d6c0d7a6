"""The Python contenders, each a process of its own serving one model directory:

    python bench/python_servers.py --mode seed|batched --model DIR --port N [--threads N]

seed     the original Python service's design: every text (or document) of a request is one
         `session.run` on a batch of one, in `asyncio.to_thread`, gathered with
         `asyncio.gather`; the session has default `ort.InferenceSession(path)` options.
batched  the same server with one padded `session.run` per request and the floor's session
         options (`--threads` intra-op threads, no spinning, sequential execution).

Both: aiohttp, `tokenizers`, mean pooling and L2 normalisation in numpy; embedfn's request and
response shapes: `POST /api/embed` {"input": str | [str]} -> {"model", "embeddings"} for an
embedder, `POST /api/rerank` {"query", "documents"} -> {"model", "results": [{"index",
"relevance_score", "document"}], best first} for a cross-encoder; `GET /health`.
"""

import argparse
import asyncio
import functools

import numpy as np
import onnxruntime as ort
from aiohttp import web

from onnx_run import feeds, floor_options, pad, pool, sigmoid
from system import physical_cores
from textmodel import TextModel


class Engine:
    """Tokenize, pad, run, pool: one padded `session.run` per call."""

    def __init__(self, model, session):
        self.model = model
        self.session = session

    def _run(self, seqs):
        ids, mask = pad(seqs, self.model.pad_id)
        return self.session.run(None, feeds(self.session, ids, mask, self.model.task_id))[0], mask

    def embed(self, texts):
        """Normalised vectors [len(texts), hidden]."""
        out, mask = self._run([self.model.encode(t) for t in texts])
        return pool(out, mask, self.model.pooling)

    def scores(self, query, documents):
        """Relevance of each document to `query`, [len(documents)]."""
        out, _ = self._run([self.model.pair(query, d) for d in documents])
        return sigmoid(out)


async def one_run_per_item(fn, items):
    """The seed's design: each item its own `fn([item])` in a worker thread, all gathered."""
    parts = await asyncio.gather(*(asyncio.to_thread(fn, [item]) for item in items))
    return np.concatenate(parts)


async def one_run_per_request(fn, items):
    """One `fn(items)` in a worker thread."""
    return await asyncio.to_thread(fn, items)


def make_app(engine, spread):
    """The aiohttp application: the route that fits the model's kind, and `/health`."""
    name = engine.model.name

    async def embed(request):
        body = await request.json()
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        vectors = await spread(engine.embed, texts)
        return web.json_response({"model": name, "embeddings": vectors.tolist()})

    async def rerank(request):
        body = await request.json()
        documents = body["documents"]
        scores = await spread(functools.partial(engine.scores, body["query"]), documents)
        results = [{"index": int(i), "relevance_score": float(scores[i]), "document": documents[i]}
                   for i in np.argsort(-scores, kind="stable")]
        return web.json_response({"model": name, "results": results})

    async def health(_request):
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/api/rerank" if engine.model.cross_encoder else "/api/embed",
                        rerank if engine.model.cross_encoder else embed)
    return app


def main():
    """Loads the model the way `--mode` says and serves it on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("seed", "batched"), required=True)
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=physical_cores(),
                        help="intra-op threads of the batched mode (default: physical cores)")
    parser.add_argument("--onnx", default="model.onnx", help="ONNX file under the model's onnx/ (a variant)")
    parser.add_argument("--cuda", action="store_true", help="CUDA execution provider first")
    args = parser.parse_args()
    model = TextModel(args.model, args.onnx)
    providers = (["CUDAExecutionProvider"] if args.cuda else []) + ["CPUExecutionProvider"]
    if args.mode == "seed":
        session, spread = ort.InferenceSession(model.onnx_path, providers=providers), one_run_per_item
    else:
        session = ort.InferenceSession(model.onnx_path, floor_options(args.threads), providers=providers)
        spread = one_run_per_request
    web.run_app(make_app(Engine(model, session), spread), host="127.0.0.1", port=args.port,
                print=None, access_log=None)


if __name__ == "__main__":
    main()
