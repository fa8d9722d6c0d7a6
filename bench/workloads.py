"""The inputs every contender gets: deterministic English sentences, long texts, a rerank
query, and the five workloads built from them."""

import random
from dataclasses import dataclass

SUBJECTS = ["The old lighthouse keeper", "A young engineer", "My neighbour's cat", "The city council",
            "Every student in the class", "The research team", "A quiet librarian", "The delivery driver",
            "Our new manager", "The football coach", "A tired nurse", "The museum guide"]
VERBS = ["repaired", "described", "photographed", "ignored", "carefully studied", "quickly sold",
         "painted", "discovered", "borrowed", "forgot about", "translated", "measured"]
OBJECTS = ["the broken bicycle", "a map of the northern islands", "the results of the experiment",
           "an unusual red mushroom", "the castle's secret tunnel", "a box of handwritten letters",
           "the noisy washing machine", "a recipe for lemon cake", "the train timetable",
           "an old jazz record", "the solar panels on the roof", "a stack of unpaid invoices"]
TAILS = ["before the storm arrived.", "on a rainy Tuesday afternoon.", "without telling anyone.",
         "while the kettle was boiling.", "for the third time this year.", "at the edge of the forest.",
         "because the deadline was approaching fast and nobody else had the time to do it properly.",
         "after a long and surprisingly pleasant conversation with the owner of the bakery downstairs."]
RERANK_QUERY = "Who repaired the broken bicycle before the storm?"
LONG_MIN_TOKENS = 600  # embedfn and the Python servers truncate these to the model's 512
HUGE_TOKENS = 2000  # (f): one text of 2,000 tokens, cut to MiniLM's 512


def sentences(count, seed=0):
    """`count` distinct sentences of varying length, the same on every run."""
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < count:
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}"
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def long_texts(count, model, pool, min_tokens=LONG_MIN_TOKENS):
    """`count` texts of at least `min_tokens` tokens on `model`, each from its own offset."""
    out = []
    for start in range(count):
        parts = []
        while model.untruncated_length(" ".join(parts)) < min_tokens:
            parts.append(pool[(start * 7 + len(parts)) % len(pool)])
        out.append(" ".join(parts))
    return out


@dataclass
class Workload:
    """Requests (JSON bodies) sent `reps` times, sequentially or split among `clients`."""

    key: str
    title: str
    model: str
    path: str
    requests: list
    reps: int
    clients: int = 1

    def items(self, body):
        """Texts or documents in one request."""
        return len(body["documents"]) if "documents" in body else len(body["input"])

    def items_per_rep(self):
        """Texts or documents in one repetition."""
        return sum(self.items(b) for b in self.requests)


def embed_body(model, texts):
    """An /api/embed request."""
    return {"model": model, "input": texts}


def build(models, quick):
    """The workloads (a)-(f); `models` maps a directory name to its TextModel; `quick` cuts
    repetitions and request counts."""
    short = sentences(256)
    long = long_texts(16, models["jina-embed-tiny"], short)
    for doc in short[:100]:
        models["jina-rerank-tiny"].pair(RERANK_QUERY, doc)  # raises unless it fits one window
    singles, per_client = (25, 4) if quick else (50, 10)
    huge = long_texts(1, models["minilm"], short, HUGE_TOKENS)
    reps = ({"a": 2, "b": 1, "c": 2, "d": 3, "e": 1, "f": 3} if quick
            else {"a": 12, "b": 10, "c": 40, "d": 60, "e": 5, "f": 20})
    return [
        Workload("a", "(a) 256 short texts, 32 per request", "minilm", "/api/embed",
                 [embed_body("minilm", short[i:i + 32]) for i in range(0, 256, 32)], reps["a"]),
        Workload("b", f"(b) single-text requests, {singles} per rep", "minilm", "/api/embed",
                 [embed_body("minilm", [short[i]]) for i in range(singles)], reps["b"]),
        Workload("c", f"(c) long texts (>= {LONG_MIN_TOKENS} tokens, cut to 512), 4 per request",
                 "jina-embed-tiny", "/api/embed",
                 [embed_body("jina-embed-tiny", long[i:i + 4]) for i in range(0, 16, 4)], reps["c"]),
        Workload("d", "(d) rerank 1 query x 100 documents", "jina-rerank-tiny", "/api/rerank",
                 [{"model": "jina-rerank-tiny", "query": RERANK_QUERY, "documents": short[:100]}], reps["d"]),
        Workload("e", f"(e) 16 concurrent clients x {per_client} single-text requests", "minilm", "/api/embed",
                 [embed_body("minilm", [short[(i * 7) % 256]]) for i in range(16 * per_client)], reps["e"],
                 clients=16),
        Workload("f", f"(f) one {HUGE_TOKENS:,}-token text (cut to 512), 1 per request", "minilm", "/api/embed",
                 [embed_body("minilm", huge)], reps["f"]),
    ]
