"""bench/cost.py: the $ per 1M tokens arithmetic against hand-computed figures, the reading of a
bench-scale.json shaped like bench/scale.py writes it, and the sources of every price constant."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COST_PY = ROOT / "bench" / "cost.py"

_spec = importlib.util.spec_from_file_location("embedfn_bench_cost", COST_PY)
cost = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cost  # dataclasses look the module up while the class is made
_spec.loader.exec_module(cost)

X86_GB_S = 0.0000166667
ARM_GB_S = 0.0000133334
REQUESTS_PER_1M_TOKENS = 0.20 / 16384  # $0.20 per 1M requests, 512 x 32 tokens per request


def test_the_prices_the_arithmetic_below_assumes():
    assert cost.PRICES["lambda_x86_gb_s"].usd == X86_GB_S
    assert cost.PRICES["lambda_arm64_gb_s"].usd == ARM_GB_S
    assert cost.PRICES["lambda_request_per_million"].usd == 0.20
    assert cost.PRICES["lmi_management_fee"].usd == 0.15
    assert cost.INSTANCES["c7g.xlarge"].usd_per_hour.usd == 0.145
    assert cost.INSTANCES["c7g.xlarge"].vcpus == 4
    assert cost.INSTANCES["c7i.xlarge"].usd_per_hour.usd == 0.1785
    assert cost.LAMBDA_MB_PER_VCPU == 1769
    assert cost.DEFAULT_TOKENS_PER_REQUEST == 16384


def test_lambda_x86_one_vcpu_by_hand():
    # 1,769 MB = 1 vCPU; 1e6 tokens at 1,000 tokens/s = 1,000 s; 1,769 / 1,024 GB x 1,000 s
    # = 1,727.5390625 GB-s at $0.0000166667 = $0.0287923753; requests: 1e6 / 16,384 requests at
    # $0.0000002 = $0.0000122070.
    got = cost.lambda_cost(1000, X86_GB_S, memory_mb=1769)
    assert got == pytest.approx(1727.5390625 * 0.0000166667 + 0.20 / 16384, rel=1e-12)
    assert got == pytest.approx(0.0288045823, abs=1e-10)


def test_lambda_arm64_is_the_gb_s_ratio_cheaper_in_compute():
    x86 = cost.lambda_cost(1000, X86_GB_S, memory_mb=1769) - REQUESTS_PER_1M_TOKENS
    arm = cost.lambda_cost(1000, ARM_GB_S, memory_mb=1769) - REQUESTS_PER_1M_TOKENS
    assert arm == pytest.approx(1727.5390625 * 0.0000133334, rel=1e-12)
    assert arm / x86 == pytest.approx(0.8, abs=1e-5)


def test_lambda_cost_does_not_depend_on_memory_size():
    # Twice the memory is twice the GB-s price per second and twice the vCPUs.
    small = cost.lambda_cost(250, X86_GB_S, memory_mb=1769)
    for mb in (884, 3538, 10240):
        assert cost.lambda_cost(250, X86_GB_S, memory_mb=mb) == pytest.approx(small, rel=1e-12)


def test_lambda_at_10240_mb_counting_six_vcpus():
    # 10,240 / 1,024 = 10 GB; 1e6 / (100 x 6) = 1,666.67 s; 16,666.67 GB-s x $0.0000166667.
    got = cost.lambda_cost(100, X86_GB_S, memory_mb=10240, vcpus=6)
    assert got == pytest.approx(10 * (1e6 / 600) * 0.0000166667 + REQUESTS_PER_1M_TOKENS, rel=1e-12)
    # By the 1,769 MB rule the function has 5.79 vCPU, not 6: 6 / 5.7886 more per token.
    default = cost.lambda_cost(100, X86_GB_S, memory_mb=10240)
    assert (default - REQUESTS_PER_1M_TOKENS) / (got - REQUESTS_PER_1M_TOKENS) == pytest.approx(6 * 1769 / 10240)


def test_request_charge_scales_with_tokens_per_request():
    a = cost.lambda_cost(1000, X86_GB_S, memory_mb=1769, tokens_per_request=512)
    b = cost.lambda_cost(1000, X86_GB_S, memory_mb=1769, tokens_per_request=16384)
    assert a - b == pytest.approx(0.20 / 512 - 0.20 / 16384, rel=1e-9)


def test_managed_instances_arm64_by_hand():
    # c7g.xlarge $0.145/h x 1.15 = $0.16675/h for 4 vCPU x 1,000 tokens/s x 3,600 s = 14.4M tokens:
    # $0.0115798611 per 1M tokens, plus $0.0000122070 of requests.
    got = cost.managed_instances_cost(1000, cost.INSTANCES["c7g.xlarge"])
    assert got == pytest.approx(0.16675 / 14.4 + 0.20 / 16384, rel=1e-12)
    assert got == pytest.approx(0.0115920681, abs=1e-10)


def test_managed_instances_x86_with_a_reserved_vcpu():
    # c7i.xlarge $0.1785/h x 1.15 = $0.205275/h; 3 usable vCPU x 500 tokens/s x 3,600 = 5.4M tokens.
    got = cost.managed_instances_cost(500, cost.INSTANCES["c7i.xlarge"], reserved_vcpus=1)
    assert got == pytest.approx(0.205275 / 5.4 + REQUESTS_PER_1M_TOKENS, rel=1e-12)


@pytest.mark.parametrize("bad", [0, -1.0])
def test_non_positive_throughput_is_refused(bad):
    with pytest.raises(ValueError):
        cost.lambda_cost(bad, X86_GB_S)
    with pytest.raises(ValueError):
        cost.managed_instances_cost(bad, cost.INSTANCES["c7g.xlarge"])


def test_lambda_memory_outside_the_limits_is_refused():
    with pytest.raises(ValueError):
        cost.lambda_cost(100, X86_GB_S, memory_mb=10241)
    with pytest.raises(ValueError):
        cost.lambda_cost(100, X86_GB_S, memory_mb=127)


def _stats(n, p50_ms, tokens_per_s=None, rss=400.0):
    st = {"requests": 4, "p50_ms": p50_ms, "p99_ms": p50_ms * 1.1, "texts_per_s": 1000 / p50_ms,
          "peak_rss_mib": rss}
    if tokens_per_s is not None:
        st["tokens_per_s"] = tokens_per_s
    return st


def bench_scale_doc(cuda=False):
    """Shaped like bench/scale.py's bench-scale.json (length keys are strings after JSON)."""
    return {
        "machine": {"cpu": "Test CPU", "physical_cores": 2, "threads": 2},
        "cuda": cuda, "batch": 1, "max_batch_size": None,
        "models": {
            "jina-v3-scale": {
                "int8": {"file": "model_int8.onnx", "file_mib": 543.0, "contenders": {
                    "embedfn": {"cold_start_s": 56.4, "cold_start_cached_s": 9.1, "peak_rss_after_start_mib": 357,
                                "lengths": {"128": _stats(128, 2000.0, 64.0), "512": _stats(512, 11200.0, 45.7)}},
                    "floor (ORT session.run)": {"session_s": 3.0, "lengths": {"512": _stats(512, 8100.0, 63.2)}},
                }},
                "q4": None,  # the file was missing: scale.py writes None
                "fp16": {"file": "model_fp16.onnx", "file_mib": 1084.0, "contenders": {
                    "floor (ORT session.run)": {"lengths": {"128": _stats(128, 900.0, 142.0)}}}},
            },
            "jina-reranker-scale": {
                # a run cut short: tokens_per_s missing, p50 present
                "fp32": {"file": "model.onnx", "file_mib": 1062.0, "contenders": {
                    "embedfn": {"lengths": {"512": _stats(512, 8000.0), "bogus": {"p50_ms": 1.0},
                                            "1024": "not a dict"}}}},
            },
        },
    }


def test_from_json_reads_a_bench_scale_file(tmp_path):
    path = tmp_path / "bench-scale.json"
    path.write_text(json.dumps(bench_scale_doc(), indent=1))
    warnings = []
    got = {m.name: m for m in cost.read_bench_scale(path, vcpus=2, warn=warnings.append)}
    assert set(got) == {"jina-v3-scale-int8-128", "jina-v3-scale-int8-512", "jina-reranker-scale-fp32-512"}
    assert got["jina-v3-scale-int8-512"].tps_per_vcpu == pytest.approx(45.7 / 2)
    assert got["jina-v3-scale-int8-128"].tps_per_vcpu == pytest.approx(32.0)
    # No tokens_per_s: 512 tokens in a p50 of 8.0 s = 64 tokens/s on 2 vCPU.
    assert got["jina-reranker-scale-fp32-512"].tps_per_vcpu == pytest.approx(32.0)
    assert got["jina-v3-scale-int8-512"].peak_rss_mib == 400.0
    assert not warnings

    floor = cost.read_bench_scale(path, vcpus=4, contender="floor (ORT session.run)", lengths={512})
    assert [(m.name, m.tps_per_vcpu) for m in floor] == [("jina-v3-scale-int8-512", pytest.approx(63.2 / 4))]


def test_from_json_skips_cuda_runs_and_warns_on_other_thread_counts(tmp_path):
    path = tmp_path / "cuda.json"
    path.write_text(json.dumps(bench_scale_doc(cuda=True)))
    warnings = []
    assert cost.read_bench_scale(path, vcpus=2, warn=warnings.append) == []
    assert "no GPU" in warnings[0]

    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(bench_scale_doc()))
    warnings = []
    assert cost.read_bench_scale(path, vcpus=16, warn=warnings.append)
    assert "--vcpus 16" in warnings[0]


def test_from_json_end_to_end(tmp_path):
    path = tmp_path / "bench-scale.json"
    path.write_text(json.dumps(bench_scale_doc()))
    out = subprocess.run([sys.executable, str(COST_PY), "--from-json", str(path), "--lengths", "512",
                          "--lambda-memory-mb", "1769"], check=True, capture_output=True, text=True).stdout
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| jina-v3-scale-int8-512 ")]
    assert len(rows) == 4, out
    assert "jina-v3-scale-int8-128" not in out
    # 22.85 tokens/s per vCPU on x86 Lambda: $0.0287923753 x 1000 / 22.85 + requests.
    x86 = next(r for r in rows if r[1].startswith("Lambda x86-64"))
    assert x86[3] == "$" + f"{1727.5390625 * 0.0000166667 * 1000 / 22.85 + 0.20 / 16384:.3g}"
    arm = next(r for r in rows if r[1].startswith("Lambda arm64"))
    assert "(x86 figure)" in arm[2]
    for api in ("OpenAI text-embedding-3-small", "Jina AI API", "Cohere Embed 4"):
        assert f"| {api}" in out


def test_throughput_arm64_replaces_the_x86_figure():
    args = cost.parse_args(["--throughput", "m=100", "--throughput-arm64", "m=50"])
    rows = {(r[0], r[1].split(",")[0]): r for r in cost.rows(
        [cost.Measured("m", 100.0)], dict(args.throughput_arm64), args)}
    arm = rows[("m", "Lambda arm64")]
    assert arm[2] == "50"
    assert arm[3] == pytest.approx(cost.lambda_cost(50, ARM_GB_S))
    assert rows[("m", "Managed Instances arm64")][3] == pytest.approx(
        cost.managed_instances_cost(50, cost.INSTANCES["c7g.xlarge"]))


@pytest.mark.parametrize("arg", ["novalue", "=12", "m=abc", "m=0", "m=-3", "m=nan"])
def test_bad_throughput_arguments_are_refused(arg):
    r = subprocess.run([sys.executable, str(COST_PY), "--throughput", arg], capture_output=True, text=True)
    assert r.returncode == 2, r.stdout


def test_every_price_constant_has_a_source_url_and_a_date():
    prices = list(cost.PRICES.items()) + [(k, i.usd_per_hour) for k, i in cost.INSTANCES.items()]
    for key, price in prices:
        assert re.fullmatch(r"https://[^\s]+\.[a-z]{2,}(/[^\s]*)?", price.source), (key, price.source)
        assert price.date.strip(), key
        assert price.usd > 0, key
    # Every Price(...) written in the file is one of those checked above.
    assert len(re.findall(r"\bPrice\(", COST_PY.read_text())) == len(prices)
    for label, key in cost.APIS:
        assert key in cost.PRICES, label


def test_money_formatting():
    assert cost.money(1.2596) == "$1.26"
    assert cost.money(0.6243) == "$0.624"
    assert cost.money(0.0115920681) == "$0.0116"
    assert cost.money(0.02) == "$0.02"
    assert cost.money(0.1) == "$0.10"
