"""Dollars per million tokens: embedfn on AWS Lambda (x86-64 and arm64, on-demand and Lambda Managed
Instances) from measured tokens per second per vCPU, beside hosted embedding APIs.

    python3 bench/cost.py --from-json ~/.cache/embedfn/bench/bench-scale.json --vcpus 2
    python3 bench/cost.py --throughput jina-v3-scale-int8-512=22.86

Formulas (all per 1,000,000 tokens; "tps" is tokens per second per vCPU):

- Lambda on-demand: GB-second price x memory GB x seconds, where seconds = 1e6 / (tps x vCPUs)
  and vCPUs = memory MB / 1,769 (Lambda's CPU share: one vCPU-second of credits per second at
  1,769 MB), plus the price per 1M requests / tokens per request. CPU-bound work scales with vCPUs and the
  price with GB, so the result does not depend on the memory size as long as the model fits in it
  and the work uses every vCPU it is given.
- Lambda Managed Instances: (EC2 on-demand $/h + the management fee, a share of that on-demand
  price) / (instance vCPUs x tps x 3600), at full utilisation of every instance vCPU, plus the
  price per 1M requests / tokens per request.
- APIs: their published price per 1M input tokens.

arm64 rows use the x86 tokens/s per vCPU unless --throughput-arm64 NAME=... gives an arm64 figure.
Dependency-free (Python 3.11 standard library only).
"""

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

RETRIEVED = "retrieved 2026-12-07 via the search index"


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str  # URL of the page stating the price
    date: str  # the date that page states, or when it was read
    note: str = ""


# --- Published prices (USD, us-east-1). Each: value, unit, source URL, date. ----------------------
PRICES = {
    # AWS Lambda on-demand duration, x86, first tier (first 6 billion GB-s a month).
    # https://aws.amazon.com/lambda/pricing/ (the rate table there is rendered client-side); the
    # same figure in AWS's whitepaper https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html
    # ($0.00001667) and in AWS's own LMI calculator (aws-samples/sample-aws-lambda-managed-instances,
    # tools/pricing-calculator/docs/CALCULATOR_METHODOLOGY.md: $0.0000166667). Retrieved 2026-12-07.
    "lambda_x86_gb_s": Price(0.0000166667, "per GB-second, x86, first tier",
                             "https://aws.amazon.com/lambda/pricing/", RETRIEVED,
                             "also https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html"),
    # AWS Lambda on-demand duration, Arm (Graviton), first tier (first 7.5 billion GB-s a month):
    # 20 % below x86. https://aws.amazon.com/lambda/pricing/ as transcribed by
    # https://cloudchipr.com/blog/aws-lambda-pricing (US East, "First 7.5 Billion GB-seconds per
    # month: $0.0000133334"); AWS's LMI calculator uses $0.0000133333. Retrieved 2026-12-07.
    "lambda_arm64_gb_s": Price(0.0000133334, "per GB-second, arm64, first tier",
                               "https://aws.amazon.com/lambda/pricing/", RETRIEVED,
                               "transcribed at https://cloudchipr.com/blog/aws-lambda-pricing"),
    # Lambda requests, both architectures: $0.20 per 1M requests.
    # https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html. Retrieved 2026-12-07.
    "lambda_request_per_million": Price(0.20, "per 1M requests (on-demand)",
                                        "https://aws.amazon.com/lambda/pricing/", RETRIEVED,
                                        "also https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html"),
    # Lambda Managed Instances: request charge $0.20 per 1M requests and a compute management fee of
    # 15 % of the EC2 on-demand instance price (charged on the on-demand price even when Savings Plans
    # or Reserved Instances discount the instance), plus the EC2 instance itself.
    # https://aws.amazon.com/lambda/pricing/ ("15% premium on the EC2 on-demand instance price", as
    # transcribed 2026-09-20 in api-evangelist/aws-lambda plans/aws-lambda-plans-pricing.yml) and
    # aws-samples/sample-aws-lambda-managed-instances tools/pricing-calculator/web/src/utils/calculator.js
    # (LMI_MANAGEMENT_FEE = 0.15, LMI_REQUEST_PRICE = 0.20 / 1e6). Page read 2026-09-20.
    "lmi_request_per_million": Price(0.20, "per 1M requests (Managed Instances)",
                                     "https://aws.amazon.com/lambda/pricing/", "2026-09-20 (page read)"),
    "lmi_management_fee": Price(0.15, "share of the EC2 on-demand price",
                                "https://aws.amazon.com/lambda/pricing/", "2026-09-20 (page read)"),
    # Hosted APIs, per 1M input tokens.
    # OpenAI text-embedding-3-small: $0.02 (announced at $0.00002 / 1K tokens); the model page
    # https://developers.openai.com/api/docs/models/text-embedding-3-small shows $0.02, batch $0.01,
    # snapshot effective 2026-07-03 (tokenprice.fyi). Retrieved 2026-12-07.
    "openai_3_small": Price(0.02, "per 1M tokens",
                            "https://developers.openai.com/api/docs/models/text-embedding-3-small",
                            "2026-07-03 (snapshot)", "announced 2024-01-25 at https://openai.com/index/new-embedding-models-and-api-updates/"),
    "openai_3_small_batch": Price(0.01, "per 1M tokens, Batch API (async, up to 24 h)",
                                  "https://developers.openai.com/api/docs/models/text-embedding-3-small",
                                  "2026-07-03 (snapshot)"),
    # Jina AI Search Foundation API (embeddings and reranker): $0.05 per 1M tokens since May 2025
    # (before: about $0.018-0.02). Jina's machine-readable catalog https://api.jina.ai/v1/models gives
    # pricing.prompt = 0.00000005 per token, as quoted in BerriAI/litellm PR #40569 (2026-09-10).
    # jina.ai's own billing page renders client-side and could not be read through the index.
    "jina_api": Price(0.05, "per 1M tokens (embeddings and reranker)",
                      "https://api.jina.ai/v1/models", "2026-09-10 (quoted in https://github.com/BerriAI/litellm/pull/40569)",
                      "price since May 2025; jina.ai/embeddings billing page not readable via the index"),
    # Cohere Embed 4: $0.12 per 1M text tokens ($0.47 per 1M image tokens).
    # https://cohere.com/pricing as given by https://developer.puter.com/tutorials/cohere-api-pricing/
    # ("Jun 2026") and https://www.getmaxim.ai/bifrost/llm-cost-calculator/provider/cohere/model/embed-v4.0.
    "cohere_embed_4": Price(0.12, "per 1M text tokens",
                            "https://cohere.com/pricing", "2026-06 (as transcribed by developer.puter.com)"),
    # Cohere Embed v3 (embed-english-v3.0, embed-multilingual-v3.0): $0.10 per 1M tokens in
    # third-party price lists (getmaxim.ai); https://www.developersdigest.tech/models/embeddings/cohere-embed-english-v3-0
    # reports that cohere.com/pricing no longer shows a self-serve rate for v3. Retrieved 2026-12-07.
    "cohere_embed_v3": Price(0.10, "per 1M tokens (legacy list price)",
                             "https://www.getmaxim.ai/bifrost/llm-cost-calculator/provider/cohere", RETRIEVED,
                             "not on cohere.com/pricing self-serve any more"),
}


@dataclass(frozen=True)
class Instance:
    name: str
    arch: str
    vcpus: int
    memory_gib: int
    usd_per_hour: Price


# EC2 on-demand, Linux, us-east-1.
INSTANCES = {
    # c7g.xlarge (Graviton3): $0.1450/h. aws-samples/sample-aws-lambda-managed-instances
    # tools/pricing-calculator/web/src/utils/calculator.js INSTANCE_TYPES ("validated against
    # official AWS sources"); AWS's page is https://aws.amazon.com/ec2/pricing/on-demand/. Retrieved 2026-12-07.
    "c7g.xlarge": Instance("c7g.xlarge", "arm64", 4, 8, Price(
        0.1450, "per instance-hour, on-demand Linux, us-east-1",
        "https://github.com/aws-samples/sample-aws-lambda-managed-instances/blob/main/tools/pricing-calculator/web/src/utils/calculator.js",
        RETRIEVED, "AWS's page: https://aws.amazon.com/ec2/pricing/on-demand/")),
    "c7g.2xlarge": Instance("c7g.2xlarge", "arm64", 8, 16, Price(
        0.2900, "per instance-hour, on-demand Linux, us-east-1",
        "https://github.com/aws-samples/sample-aws-lambda-managed-instances/blob/main/tools/pricing-calculator/web/src/utils/calculator.js",
        RETRIEVED)),
    # c7i.xlarge (Sapphire Rapids): $0.1785/h. Not found on an AWS page through the index; two
    # independent third-party rate tables agree (one citing https://aws.amazon.com/ec2/pricing/on-demand/
    # "2025-Q4", one dated 2026-06-10). Check before relying on it.
    "c7i.xlarge": Instance("c7i.xlarge", "x86_64", 4, 8, Price(
        0.1785, "per instance-hour, on-demand Linux, us-east-1",
        "https://aws.amazon.com/ec2/pricing/on-demand/", RETRIEVED,
        "unverified on AWS's own page: from two third-party rate tables")),
    "c7i.2xlarge": Instance("c7i.2xlarge", "x86_64", 8, 16, Price(
        0.3570, "per instance-hour, on-demand Linux, us-east-1",
        "https://aws.amazon.com/ec2/pricing/on-demand/", RETRIEVED,
        "unverified on AWS's own page: from a third-party rate table")),
}

# At 1,769 MB a function has the equivalent of one vCPU (one vCPU-second of credits per second);
# memory is 128-10,240 MB. https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html
# 10,240 MB shows 6 vCPUs: https://aws.amazon.com/about-aws/whats-new/2020/12/aws-lambda-supports-10gb-memory-6-vcpu-cores-lambda-functions/
LAMBDA_MB_PER_VCPU = 1769
LAMBDA_MIN_MB, LAMBDA_MAX_MB = 128, 10240
DEFAULT_TOKENS_PER_REQUEST = 512 * 32

APIS = [  # (row label, price key)
    ("OpenAI text-embedding-3-small", "openai_3_small"),
    ("OpenAI text-embedding-3-small, Batch API", "openai_3_small_batch"),
    ("Jina AI API (embeddings, reranker)", "jina_api"),
    ("Cohere Embed 4 (text)", "cohere_embed_4"),
    ("Cohere Embed v3 (legacy list price)", "cohere_embed_v3"),
]


# --- Arithmetic --------------------------------------------------------------------------------------

def lambda_vcpus(memory_mb):
    """vCPU-equivalents of a Lambda function of `memory_mb` (1 per 1,769 MB)."""
    return memory_mb / LAMBDA_MB_PER_VCPU


def request_cost_per_million_tokens(price_per_million_requests, tokens_per_request):
    """Request charges per 1M tokens: (1e6 / tokens per request) requests at price / 1e6 each."""
    return price_per_million_requests / tokens_per_request


def lambda_cost(tps_per_vcpu, gb_s_price, memory_mb=LAMBDA_MAX_MB, vcpus=None,
                request_per_million=PRICES["lambda_request_per_million"].usd,
                tokens_per_request=DEFAULT_TOKENS_PER_REQUEST):
    """$ per 1M tokens on Lambda on-demand."""
    if tps_per_vcpu <= 0:
        raise ValueError("tokens/s per vCPU must be > 0")
    if not LAMBDA_MIN_MB <= memory_mb <= LAMBDA_MAX_MB:
        raise ValueError(f"Lambda memory must be {LAMBDA_MIN_MB}-{LAMBDA_MAX_MB} MB, not {memory_mb}")
    vcpus = lambda_vcpus(memory_mb) if vcpus is None else vcpus
    seconds = 1e6 / (tps_per_vcpu * vcpus)
    compute = gb_s_price * (memory_mb / 1024) * seconds
    return compute + request_cost_per_million_tokens(request_per_million, tokens_per_request)


def managed_instances_cost(tps_per_vcpu, instance, fee=PRICES["lmi_management_fee"].usd,
                           request_per_million=PRICES["lmi_request_per_million"].usd,
                           tokens_per_request=DEFAULT_TOKENS_PER_REQUEST, reserved_vcpus=0):
    """$ per 1M tokens on Lambda Managed Instances at full utilisation of the instance's vCPUs
    (less `reserved_vcpus` held back for the OS)."""
    if tps_per_vcpu <= 0:
        raise ValueError("tokens/s per vCPU must be > 0")
    usable = instance.vcpus - reserved_vcpus
    if usable <= 0:
        raise ValueError(f"{instance.name}: no vCPU left after reserving {reserved_vcpus}")
    per_hour = instance.usd_per_hour.usd * (1 + fee)
    tokens_per_hour = usable * tps_per_vcpu * 3600
    return per_hour / tokens_per_hour * 1e6 + request_cost_per_million_tokens(request_per_million,
                                                                              tokens_per_request)


# --- Inputs ------------------------------------------------------------------------------------------

def parse_pair(text):
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=TOKENS_PER_SECOND_PER_VCPU, got {text!r}")
    try:
        tps = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r} in {text!r}") from None
    if not math.isfinite(tps) or tps <= 0:
        raise argparse.ArgumentTypeError(f"tokens/s must be a positive number: {text!r}")
    return name, tps


@dataclass
class Measured:
    name: str
    tps_per_vcpu: float
    peak_rss_mib: float | None = None
    source: str = ""


def read_bench_scale(path, vcpus, contender="embedfn", lengths=None, warn=None):
    """Rows of a bench-scale.json written by bench/scale.py: {"machine": {...}, "cuda": bool,
    "batch": n, "models": {model: {variant: None | {"contenders": {name: {"lengths": {n: {
    "p50_ms", "tokens_per_s", "peak_rss_mib", ...}}}}}}}}. Tokens/s are divided by `vcpus`, the
    vCPUs the measurement ran on. Missing or malformed parts are skipped (with a warning)."""
    warn = warn or (lambda msg: print(f"[cost] {msg}", file=sys.stderr))
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    if doc.get("cuda"):
        warn(f"{path}: measured with --cuda; Lambda has no GPU, skipped")
        return []
    machine = doc.get("machine") or {}
    threads = machine.get("threads") if isinstance(machine, dict) else None
    if isinstance(threads, int) and threads != vcpus:
        warn(f"{path}: measured with {threads} threads on {machine.get('physical_cores')} cores; dividing by --vcpus {vcpus}")
    batch = doc.get("batch") if isinstance(doc.get("batch"), int) and doc.get("batch") > 0 else 1
    out = []
    models = doc.get("models") or {}
    for model, variants in (models.items() if isinstance(models, dict) else []):
        for variant, row in ((variants or {}).items() if isinstance(variants, dict) else []):
            if not isinstance(row, dict):
                continue
            c = (row.get("contenders") or {}).get(contender)
            if not isinstance(c, dict) or not isinstance(c.get("lengths"), dict):
                continue
            for key, st in c["lengths"].items():
                try:
                    n = int(key)
                except (TypeError, ValueError):
                    continue
                if lengths and n not in lengths or not isinstance(st, dict):
                    continue
                tps = st.get("tokens_per_s")
                if not isinstance(tps, (int, float)) or not math.isfinite(tps) or tps <= 0:
                    p50 = st.get("p50_ms")
                    if not isinstance(p50, (int, float)) or p50 <= 0:
                        warn(f"{model} {variant} {n}: no tokens_per_s or p50_ms, skipped")
                        continue
                    tps = batch * n / (p50 / 1000)
                rss = st.get("peak_rss_mib")
                out.append(Measured(f"{model}-{variant}-{n}", tps / vcpus,
                                    rss if isinstance(rss, (int, float)) else None, str(path)))
    return out


# --- Table -------------------------------------------------------------------------------------------

def money(v):
    """Three significant figures, at least two decimals: $1.26, $0.624, $0.0116, $0.02."""
    if v <= 0:
        return f"${v:.2f}"
    text = f"{v:.{max(2, 2 - math.floor(math.log10(v)))}f}"
    while text.endswith("0") and len(text.partition(".")[2]) > 2:
        text = text[:-1]
    return "$" + text


def usd(v):
    return "$" + f"{v:.10f}".rstrip("0").rstrip(".")


def rows(measured, arm64, args):
    """(label, platform, tokens/s per vCPU text, $ per 1M tokens) for every measured name."""
    x86_mi, arm_mi = INSTANCES[args.mi_x86_instance], INSTANCES[args.mi_arm64_instance]
    lam_vcpus = args.lambda_vcpus or lambda_vcpus(args.lambda_memory_mb)
    names = list(dict.fromkeys([m.name for m in measured] + list(arm64)))
    by_name = {m.name: m for m in measured}
    out = []
    for name in names:
        m = by_name.get(name)
        x86 = m.tps_per_vcpu if m else None
        arm = arm64.get(name, x86)
        arm_note = f"{arm:.4g}" + ("" if name in arm64 else " (x86 figure)")
        common = dict(tokens_per_request=args.tokens_per_request)
        if x86 is not None:
            out.append((name, f"Lambda x86-64, {args.lambda_memory_mb} MB ({lam_vcpus:.2f} vCPU)", f"{x86:.4g}",
                        lambda_cost(x86, PRICES["lambda_x86_gb_s"].usd, args.lambda_memory_mb, lam_vcpus, **common)))
        out.append((name, f"Lambda arm64, {args.lambda_memory_mb} MB ({lam_vcpus:.2f} vCPU)", arm_note,
                    lambda_cost(arm, PRICES["lambda_arm64_gb_s"].usd, args.lambda_memory_mb, lam_vcpus, **common)))
        if x86 is not None:
            out.append((name, f"Managed Instances x86-64, {x86_mi.name}", f"{x86:.4g}",
                        managed_instances_cost(x86, x86_mi, reserved_vcpus=args.mi_reserved_vcpus, **common)))
        out.append((name, f"Managed Instances arm64, {arm_mi.name}", arm_note,
                    managed_instances_cost(arm, arm_mi, reserved_vcpus=args.mi_reserved_vcpus, **common)))
    for label, key in APIS:
        out.append((label, "hosted API", "–", PRICES[key].usd))
    return out


def table(measured, arm64, args):
    ref = PRICES["openai_3_small"].usd
    lines = ["| model / variant / tokens | platform | tokens/s per vCPU | $ per 1M tokens | × OpenAI 3-small |",
             "|---|---|---|---|---|"]
    for label, platform, tps, cost in rows(measured, arm64, args):
        lines.append(f"| {label} | {platform} | {tps} | {money(cost)} | {cost / ref:.3g}× |")
    lam_vcpus = args.lambda_vcpus or lambda_vcpus(args.lambda_memory_mb)
    mi = (INSTANCES[args.mi_x86_instance], INSTANCES[args.mi_arm64_instance])
    reserved = f" but {args.mi_reserved_vcpus} per instance" if args.mi_reserved_vcpus else ""
    how = "as given by --lambda-vcpus" if args.lambda_vcpus else f"1 per {LAMBDA_MB_PER_VCPU} MB"
    lines += [
        "",
        f"- Lambda: {args.lambda_memory_mb} MB = {lam_vcpus:.2f} vCPU ({how}), "
        f"{usd(PRICES['lambda_x86_gb_s'].usd)} (x86-64) / {usd(PRICES['lambda_arm64_gb_s'].usd)} (arm64) per GB-s, "
        f"{money(PRICES['lambda_request_per_million'].usd)} per 1M requests of {args.tokens_per_request} tokens.",
        f"- Managed Instances: EC2 on-demand price + {PRICES['lmi_management_fee'].usd:.0%} management fee, "
        + " and ".join(f"{i.name} ({i.vcpus} vCPU, {usd(i.usd_per_hour.usd)}/h)" for i in mi)
        + f", {money(PRICES['lmi_request_per_million'].usd)} per 1M requests; every instance vCPU{reserved} "
          "busy all the time (no idle or spare instances).",
        "- arm64 rows marked \"(x86 figure)\" assume the x86 tokens/s per vCPU.",
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--throughput", action="append", type=parse_pair, default=[], metavar="NAME=TPS",
                   help="measured tokens/s per vCPU on x86-64 (repeatable)")
    p.add_argument("--throughput-arm64", action="append", type=parse_pair, default=[], metavar="NAME=TPS",
                   help="measured tokens/s per vCPU on arm64 for NAME (repeatable); default: the x86 figure")
    p.add_argument("--from-json", action="append", type=Path, default=[], metavar="PATH",
                   help="a bench-scale.json written by bench/scale.py (repeatable)")
    p.add_argument("--vcpus", type=float, default=2,
                   help="vCPUs the --from-json tokens/s were measured on (default 2)")
    p.add_argument("--contender", default="embedfn", help="contender in --from-json (default embedfn)")
    p.add_argument("--lengths", type=lambda s: {int(x) for x in s.replace(",", " ").split()},
                   help="only these input lengths from --from-json, e.g. \"512 2048\"")
    p.add_argument("--lambda-memory-mb", type=int, default=LAMBDA_MAX_MB,
                   help=f"Lambda function memory (default {LAMBDA_MAX_MB})")
    p.add_argument("--lambda-vcpus", type=float,
                   help=f"vCPUs of that function (default memory / {LAMBDA_MB_PER_VCPU}; 6 counts the cores "
                        "a 10,240 MB function shows)")
    p.add_argument("--tokens-per-request", type=int, default=DEFAULT_TOKENS_PER_REQUEST,
                   help=f"tokens per invocation, for request charges (default {DEFAULT_TOKENS_PER_REQUEST})")
    p.add_argument("--mi-x86-instance", default="c7i.xlarge", choices=sorted(i for i in INSTANCES if INSTANCES[i].arch == "x86_64"))
    p.add_argument("--mi-arm64-instance", default="c7g.xlarge", choices=sorted(i for i in INSTANCES if INSTANCES[i].arch == "arm64"))
    p.add_argument("--mi-reserved-vcpus", type=int, default=0,
                   help="vCPUs per instance not available to the function (AWS's LMI calculator assumes 1)")
    args = p.parse_args(argv)
    if args.vcpus <= 0 or args.tokens_per_request <= 0 or (args.lambda_vcpus is not None and args.lambda_vcpus <= 0):
        p.error("--vcpus, --lambda-vcpus and --tokens-per-request must be > 0")
    if not LAMBDA_MIN_MB <= args.lambda_memory_mb <= LAMBDA_MAX_MB:
        p.error(f"--lambda-memory-mb must be {LAMBDA_MIN_MB}-{LAMBDA_MAX_MB}")
    if not (args.throughput or args.throughput_arm64 or args.from_json):
        p.error("give --throughput NAME=TPS or --from-json PATH")
    return args


def main(argv=None):
    args = parse_args(argv)
    measured = []
    for path in args.from_json:
        measured += read_bench_scale(path, args.vcpus, args.contender, args.lengths)
    measured += [Measured(name, tps, source="--throughput") for name, tps in args.throughput]
    for m in measured:
        if m.peak_rss_mib and m.peak_rss_mib > args.lambda_memory_mb:
            print(f"[cost] {m.name}: peak RSS {m.peak_rss_mib:.0f} MiB exceeds {args.lambda_memory_mb} MB",
                  file=sys.stderr)
    if not measured and not args.throughput_arm64:
        print("[cost] no throughput figures found", file=sys.stderr)
        return 1
    print(table(measured, dict(args.throughput_arm64), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
