"""The GPU check (bench/gpu/check.py) on a CPU at toy sizes, so it cannot rot before a GPU runs it; and its
arithmetic (step splitting, steady-state medians, the README rows) on literal inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GPU_BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu"
sys.path.insert(0, str(GPU_BENCH))

import probes  # noqa: E402
import rollout  # noqa: E402
import stages  # noqa: E402
from check import rollout_rows, summary_rows  # noqa: E402


def test_steady_is_the_median_after_the_warm_up_step():
    assert probes.steady([]) is None
    assert probes.steady([9.0]) == 9.0  # one step: that step
    assert probes.steady([30.0, 2.0, 4.0]) == 3.0  # the 30 s first step (compilation) is left out


def test_split_steps_assigns_trl_timings_to_the_step_they_ended_in():
    steps = [{"step": 1, "begin": 0.0, "end": 10.0, "s": 10.0}, {"step": 2, "begin": 10.5, "end": 14.0, "s": 3.5}]
    events = [("gen", 6.0, 5.0), ("prep", 6.1, 5.5), ("prep", 7.0, 0.1), ("gen", 12.0, 1.0), ("late", 20.0, 1.0)]
    rows = probes.split_steps(steps, events)
    assert rows[0]["trl_timings_s"] == {"gen": 5.0, "prep": 5.6}  # 5.5 + 0.1
    assert rows[1]["trl_timings_s"] == {"gen": 1.0}
    assert "late" not in json.dumps(rows)  # ended after every step


def test_gspo_summary_splits_generation_from_training():
    steps = [
        {"s": 50.0, "trl_timings_s": {stages.GENERATE: 40.0, stages.PREPARE: 41.0}},  # warm-up, left out
        {"s": 30.0, "trl_timings_s": {stages.GENERATE: 24.0, stages.PREPARE: 25.0, stages.REWARDS: 0.5}},
        {"s": 34.0, "trl_timings_s": {stages.GENERATE: 26.0, stages.PREPARE: 27.0, stages.REWARDS: 0.7}},
    ]
    for step in steps:
        step["logs"] = {"completions/mean_length": 1024.0}
    out = stages.summarize("gspo", steps, generation_batch=8)
    assert out["step_s"] == 32.0  # median of 30 and 34
    assert out["generation_s"] == 25.0
    assert out["training_s"] == 6.0  # 30 - 25 and 34 - 27 -> 5 and 7
    assert out["rollout_tokens_per_s"] == pytest.approx(8 * 1024 * (1 / 24 + 1 / 26) / 2, abs=1e-3)


def test_sft_summary_counts_tokens_per_step_from_trl_running_total():
    steps = [{"s": 10.0, "logs": {"num_tokens": 4000.0}}, {"s": 2.0, "logs": {"num_tokens": 8400.0}}]
    out = stages.summarize("sft", steps, generation_batch=None)
    assert (out["first_step_s"], out["step_s"], out["tokens_per_step"], out["tokens_per_s"]) == (10, 2, 4400, 2200)


def test_summary_rows_tolerate_a_variant_that_was_killed():
    report = {"variants": {"fla": {"status": "killed at the deadline (partial results)", "stages": {}}}}
    [row] = summary_rows(report)
    assert row["variant"] == "fla" and row["sft_step_s"] is None and row["gspo_peak_gib"] is None


def test_decode_steps_are_timed_from_the_streamer_stamps():
    assert rollout.step_figures([0.0, 1.0])["ms_per_step"] is None  # the prompt and one token: no decode step
    out = rollout.step_figures([0.0, 0.5, 0.51, 0.52, 0.6])  # prompt, first token (prefill), three decode steps
    assert out["steps"] == 3 and out["prefill_s"] == 0.5
    assert out["ms_per_step"] == pytest.approx(10.0) and out["ms_per_step_mean"] == pytest.approx(100 / 3, abs=1e-3)


def test_the_floor_uses_the_data_sheet_bandwidth_of_known_gpus():
    assert rollout.nominal_bandwidth("NVIDIA H200") == 4.8
    assert rollout.nominal_bandwidth("NVIDIA H100 80GB HBM3") == 3.35
    assert rollout.nominal_bandwidth("NVIDIA H100 PCIe") == 2.0
    assert rollout.nominal_bandwidth("NVIDIA GH200 480GB") is None  # two memories, so measured; not the H200 row
    assert rollout.nominal_bandwidth("NVIDIA L40S") == 0.864 and rollout.nominal_bandwidth("NVIDIA L4") == 0.3
    assert rollout.nominal_bandwidth("NVIDIA A100-SXM4-80GB") == 2.039
    assert rollout.nominal_bandwidth("Some GPU") is None and rollout.nominal_bandwidth(None) is None
    # the arithmetic: ~9 GB of bf16 weights on an H200 -> about 1.9 ms per step
    assert 9e9 / (rollout.nominal_bandwidth("NVIDIA H200") * 1e12) * 1000 == pytest.approx(1.875)


def test_rollout_rows_keep_the_reason_a_variant_did_not_run():
    report = {
        "rollout": {"floor_ms": 2.0, "variants": {"today": {"status": "ok", "ms_per_step": 120.0, "x_floor": 60}}}
    }
    report["rollout"]["variants"]["compiled"] = {"status": "skipped", "reason": "no CUDA"}
    today, compiled = rollout_rows(report)
    assert (today["ms_per_step"], today["x_floor"], today["floor_ms"]) == (120.0, 60, 2.0)
    assert compiled["status"] == "skipped" and compiled["reason"] == "no CUDA" and compiled["ms_per_step"] is None


@pytest.mark.slow
def test_the_check_runs_end_to_end_on_a_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": ""}
    args = ["--tiny", "--out", str(out), "--sft_steps", "1", "--gspo_steps", "1", "--judge_batches", "2"]
    args += ["--variants", "fast,torch"]
    run = subprocess.run(
        [sys.executable, str(GPU_BENCH / "check.py"), *args, "--deadline_s", "900"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    logs = {p.name: p.read_text(encoding="utf-8", errors="replace")[-3000:] for p in (out / "logs").glob("*.log")}
    assert run.returncode == 0, (run.stdout[-3000:], logs, json.dumps(report, ensure_ascii=False)[:4000])
    assert report["complete"] is True and report["versions"]["trl"]
    assert report["model"]["layer_types"].startswith("3 linear_attention + 1 full_attention")
    assert report["judge_roundtrip"]["calls"] == 16 and report["judge_roundtrip"]["failures"] == 0
    assert set(report["variants"]) == {"fast", "torch"}
    assert report["variants"]["torch"]["fla_kernels_used"] is False  # fla blocked: the PyTorch path
    assert "--rollout_compile: not used, a compiled decode needs CUDA graphs" in logs["fast.log"]
    for variant in report["variants"].values():
        sft, gspo = variant["stages"]["sft"], variant["stages"]["gspo"]
        assert sft["status"] == gspo["status"] == "ok"
        assert sft["summary"]["steps"] == 1 and sft["summary"]["tokens_per_step"] > 0
        assert gspo["summary"]["generation_s"] > 0 and gspo["summary"]["completions_per_step"] == 8  # G=4 x 2
        assert gspo["judge"]["judgments"] == 8
    assert [row["variant"] for row in report["summary"]] == ["fast", "torch"]
    assert "| variant |" in run.stdout
    rollouts = report["rollout"]
    assert (rollouts["rows"], rollouts["new_tokens"], rollouts["status"]) == (8, 32, "ok")
    assert rollouts["floor_ms"] > 0 and rollouts["bandwidth_tb_s"]["measured_copy"] > 0
    ran = {name: v for name, v in rollouts["variants"].items() if v["status"] == "ok"}
    assert list(ran) == ["today", "merged", "fla_forward", "compiled"]  # a CPU runs fla's binding as the reference
    for variant in ran.values():
        assert variant["steps"] == 31 and variant["ms_per_step"] > 0 and variant["x_floor"] > 1
    assert [ran[v]["merged"] for v in ran] == [False, True, True, True]
    assert [ran[v]["compiled"] for v in ran] == [False, False, False, True]
    assert {ran[v]["dispatch_sites"] for v in ran} == {2}  # the chunk and recurrent kernels of the model's module
    chunk = ran["fla_forward"]["kernels"]["torch_chunk_gated_delta_rule"]
    assert (
        chunk.startswith("medgspo phase dispatch (no-grad: transformers.models.qwen3_5") and "reference_only" in chunk
    )
    assert rollouts["kernel_check"]["within_tolerance"] and rollouts["logprob_check"]["tokens"] == 8 * 32
    assert "| rollout variant (8 rows x 32 new tokens) |" in run.stdout
