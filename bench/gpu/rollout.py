"""The GPU check's rollout stage: milliseconds per batched decode step for each way medgspo generates GSPO rollouts
with transformers, against the floor that reading the weights once per step sets.

Variants, each adding one change to the one before it:

* ``today``: the LoRA unmerged, gated-DeltaNet on transformers' PyTorch reference, a dynamic cache, no compile
  (the first GPU run's path: 122 ms per step on an H200);
* ``merged``: + the LoRA merged into the weights while generating (``--merge_adapter_for_rollouts``);
* ``fla_forward``: + fla's forward and recurrent kernels without gradients (medgspo's per-phase kernel choice);
* ``compiled``: + a static cache and a compiled decode (``--rollout_compile``, ``cache_implementation: static``;
  with ``--tiny`` it is compiled on the CPU without CUDA graphs, so that the path runs before any GPU does).

Each variant first runs a short warm-up generate of the same shapes (Triton autotuning, compilation, CUDA graph
capture: ``warmup_s``), then ``rows`` x ``new_tokens`` with the card's sampling and ``min_new_tokens`` equal to
``max_new_tokens`` (every row runs to the end), stopped at ``cap_s``. A streamer stamps every step: ``ms_per_step``
is the median decode step, ``prefill_s`` the first. The floor is the bytes of the weights over the GPU's memory
bandwidth (NVIDIA's data-sheet figure for known GPUs, else the measured copy bandwidth, which is also reported).

It also records what the per-phase kernels mean for correctness on this device: fla's chunk kernel against the
reference (output and every input's gradient, float32, :func:`medgspo.train.kernels.compare_kernels`), and how far
the per-token log-probs of the generated batch move between the two kernels (what GSPO's importance ratios see
when the old-policy log-probs and the training forward run on different kernels).
"""

from __future__ import annotations

import contextlib
import statistics
import time
import traceback
from pathlib import Path
from typing import Any

import probes

VARIANTS = ("today", "merged", "fla_forward", "compiled")
WARMUP_CAP_S = 3.0  # decode seconds of the warm-up generate (compilation comes on top: it runs before the first step)
# HBM bandwidth in TB/s by device-name fragment, from NVIDIA's data sheets and product briefs (read 2026-12-08);
# the first match wins; None: the name covers parts of different bandwidths, so the measured copy is used
BANDWIDTH_TB_S = (
    ("GH200", None),  # 96 GB HBM3 (4.0) or 144 GB HBM3e (4.9); and its name contains "H200"
    ("H200", 4.8),
    ("H100 NVL", 3.9),
    ("H100 PCIe", 2.0),
    ("H100", 3.35),  # SXM5 80GB HBM3
    ("B200", 8.0),
    ("A100-SXM4-80GB", 2.039),
    ("A100 80GB PCIe", 1.935),
    ("A100", 1.555),  # 40GB
    ("L40", 0.864),  # L40 and L40S
    ("L4", 0.3),
)


def nominal_bandwidth(device_name: str | None) -> float | None:
    """Data-sheet bandwidth (TB/s) of a GPU by its CUDA name, or ``None`` when it is not in the table."""
    for fragment, tb_s in BANDWIDTH_TB_S:
        if device_name and fragment in device_name:
            return tb_s
    return None


def step_figures(stamps: list[float]) -> dict[str, Any]:
    """From a streamer's time stamps (the prompt, then one per new token): prefill and decode-step figures."""
    if len(stamps) < 3:
        return {"steps": max(len(stamps) - 1, 0), "ms_per_step": None}
    decode = [b - a for a, b in zip(stamps[1:-1], stamps[2:], strict=True)]
    return {
        "steps": len(decode),
        "prefill_s": round(stamps[1] - stamps[0], 4),
        "ms_per_step": round(1000 * statistics.median(decode), 3),
        "ms_per_step_mean": round(1000 * statistics.fmean(decode), 3),
    }


class StepClock:
    """A ``generate`` streamer that stamps each call (the prompt first, then every step's new tokens)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def put(self, value: Any) -> None:
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


def weight_bytes(model: Any) -> int:
    """Bytes one decode step reads: every distinct parameter tensor once (tied embeddings count once)."""
    seen, total = set(), 0
    for param in model.parameters():
        if param.data_ptr() not in seen:
            seen.add(param.data_ptr())
            total += param.numel() * param.element_size()
    return total


def copy_bandwidth(device: Any, gib: float = 1.0) -> float:
    """Measured device-memory bandwidth in TB/s: a copy of ``gib`` GiB reads and writes it (best of 5)."""
    import torch

    n = int(gib * 2**30)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        probes.cuda_sync()
        start = time.perf_counter()
        dst.copy_(src)
        probes.cuda_sync()
        best = min(best, time.perf_counter() - start)
    del src, dst
    return 2 * n / best / 1e12


class Rollouts:
    """One child process: the model with the card's LoRA, then each variant's decode measurement."""

    def __init__(self, plan: dict[str, Any], save) -> None:
        import torch

        self.plan, self.save = plan, save
        self.tiny = plan["tiny"]
        self.device = torch.device("cuda" if torch.cuda.is_available() and not self.tiny else "cpu")
        self.rows, self.new_tokens, self.cap_s = plan["rows"], plan["new_tokens"], plan["cap_s"]  # check.py's flags
        self.result: dict[str, Any] = {"status": "running", "rows": self.rows, "new_tokens": self.new_tokens}
        self.result["variants"] = {}

    def run(self, variants: list[str], deadline: float) -> dict[str, Any]:
        from medgspo.train.kernels import choose_kernels, probe_setup

        self.model, self.tokenizer = self.load()
        self.ids, self.mask = self.prompts()
        self.result |= self.floor()
        self.result["kernel_choice"] = choose_kernels(probe_setup(self.device.type)).line()
        self.save()
        for name in variants:
            if time.perf_counter() > deadline - self.cap_s - 10:
                self.result["variants"][name] = {"status": "skipped", "reason": "no time left before the deadline"}
                continue
            self.result["variants"][name] = self.variant(name)
            self.save()
            if name == "fla_forward" and self.result["variants"][name].get("status") == "ok":
                self.result["logprob_check"] = self.guarded(self.logprob_check)
                self.save()
        self.result["kernel_check"] = self.guarded(self.kernel_check)
        self.result["status"] = "ok"
        return self.result

    # ---- setup ------------------------------------------------------------------------------------------------
    def load(self):
        """The model folder's model with a LoRA of the card's shape (r16, alpha 32, q/k/v/o/gate/up/down), its
        B matrices random so that merging changes the weights."""
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from medgspo.train.configs import LORA_TARGETS

        dtype = torch.float32 if self.tiny else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(self.plan["model_dir"], dtype=dtype).to(self.device)
        lora = LoraConfig(r=16, lora_alpha=32, target_modules=list(LORA_TARGETS))  # the card's adapter
        model = get_peft_model(model, lora)
        torch.manual_seed(0)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=1e-3)
        tokenizer = AutoTokenizer.from_pretrained(self.plan["model_dir"])
        tokenizer.padding_side = "left"
        return model.eval(), tokenizer

    def prompts(self):
        """``rows`` questions of the bundled data in the chat template, left-padded."""
        from medgspo.data.records import load_records

        records = load_records().records[: self.rows]
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": r["Question"]}], tokenize=False, add_generation_prompt=True
            )
            for r in records
        ]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True)
        self.result["prompt_tokens"] = int(batch["input_ids"].shape[1])
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    def floor(self) -> dict[str, Any]:
        base = self.model.get_base_model()
        nbytes = weight_bytes(base)
        nominal = nominal_bandwidth(self.result["machine"].get("gpu") if self.device.type == "cuda" else None)
        measured = copy_bandwidth(self.device, 0.25 if self.tiny else 2.0)
        bandwidth = nominal or measured
        return {
            "weight_gib": round(nbytes / 2**30, 3),
            "bandwidth_tb_s": {"nominal": nominal, "measured_copy": round(measured, 3), "used": round(bandwidth, 3)},
            "floor_ms": round(1000 * nbytes / (bandwidth * 1e12), 3),
        }

    # ---- variants -------------------------------------------------------------------------------------------------
    def settings(self, name: str) -> tuple[Any, bool, bool, str | None]:
        """``(kernel choice, merged, compiled, reason it cannot run here)`` of a variant."""
        from medgspo.train.backends import package_available
        from medgspo.train.kernel_dispatch import FLA, TORCH, KernelChoice
        from medgspo.train.rollouts import compile_decision

        at = VARIANTS.index(name)
        merged, fla, compiled = at >= 1, at >= 2, at >= 3
        choice = KernelChoice(FLA if fla else TORCH, TORCH, name)
        reason = None
        if fla and not package_available("fla") and not self.tiny:
            reason = "flash-linear-attention is not installed"
        if compiled and not self.tiny:  # --tiny compiles on the CPU (see generate) so the path runs before a GPU
            reason = reason or compile_decision(self.model, self.device.type)
        return choice, merged, compiled, reason

    def variant(self, name: str) -> dict[str, Any]:
        from medgspo.train.kernel_dispatch import install_phase_kernels, restore_kernels
        from medgspo.train.rollouts import merged_adapter

        choice, merged, compiled, reason = self.settings(name)
        if reason:
            return {"status": "skipped", "reason": reason}
        out: dict[str, Any] = {"status": "running", "merged": merged, "compiled": compiled}
        try:
            out["dispatch_sites"] = install_phase_kernels(self.model, choice)
            out["kernels"] = probes.kernel_report()
            with merged_adapter(self.model) if merged else contextlib.nullcontext(False) as did_merge:
                out["merged"] = did_merge
                start = time.perf_counter()
                self.generate(compiled, WARMUP_CAP_S)
                out["warmup_s"] = round(time.perf_counter() - start, 2)
                clock = self.generate(compiled, self.cap_s)
            out |= step_figures(clock.stamps)
            out["status"] = "ok"
        except Exception:  # noqa: BLE001 - recorded; the next variant still runs
            out |= {"status": "error", "error": traceback.format_exc()[-3000:]}
        finally:
            restore_kernels()
        if out.get("ms_per_step"):
            out["tokens_per_s"] = round(self.rows * 1000 / out["ms_per_step"], 1)
            out["x_floor"] = round(out["ms_per_step"] / self.result["floor_ms"], 2)
        return out

    def generate(self, compiled: bool, max_time: float) -> StepClock:
        import torch

        clock = StepClock()
        kwargs: dict[str, Any] = {"cache_implementation": "static"} if compiled else {}
        if compiled and self.tiny:
            from transformers import CompileConfig

            kwargs["compile_config"] = CompileConfig(mode="default")  # no CUDA graphs on a CPU
            kwargs["compile_config"]._compile_all_devices = True  # transformers' switch to compile off CUDA
        with torch.no_grad():
            self.generated = self.model.generate(
                input_ids=self.ids,
                attention_mask=self.mask,
                max_new_tokens=self.new_tokens,
                min_new_tokens=self.new_tokens,
                do_sample=True,
                temperature=1.0,
                top_p=0.95,
                top_k=20,
                max_time=max_time,
                streamer=clock,
                pad_token_id=self.tokenizer.pad_token_id,
                disable_compile=not compiled,  # TRL's rollouts pass True; --rollout_compile undoes it
                **kwargs,
            )
        probes.cuda_sync()
        return clock

    # ---- correctness on this device -------------------------------------------------------------------------------
    def guarded(self, check) -> dict[str, Any]:
        try:
            return {"status": "ok"} | check()
        except Exception:  # noqa: BLE001 - recorded
            return {"status": "error", "error": traceback.format_exc()[-3000:]}

    def kernel_check(self) -> dict[str, Any]:
        """fla's chunk kernel (transformers' binding) against the reference, output and gradients, as medgspo
        checks it before training on fla (:func:`medgspo.train.kernels.backward_check`)."""
        from medgspo.train import kernels

        result = kernels.backward_check(self.model)
        if result is None:
            return {"note": "no gated-DeltaNet layers"}
        return {
            "dtype": result.dtype,
            "relative_l2": {k: float(f"{v:.3g}") for k, v in result.diffs.items()},
            "tolerance": result.tolerance,
            "within_tolerance": result.worst <= result.tolerance,
            "fla_bound": probes.uses_fla(probes.kernel_report()),
        }

    def logprob_check(self) -> dict[str, Any]:
        """Per-token log-probs of the last generated batch with the no-grad kernel (fla) and with the reference."""
        import torch

        from medgspo.train.kernel_dispatch import FLA, TORCH, KernelChoice, install_phase_kernels, restore_kernels

        sequences, prompt = self.generated, self.ids.shape[1]
        mask = torch.cat([self.mask, torch.ones_like(sequences[:, prompt:])], dim=1)
        runs = {}
        for kernel in (FLA, TORCH):
            install_phase_kernels(self.model, KernelChoice(kernel, TORCH, "log-prob check"))
            try:
                runs[kernel] = self.completion_logprobs(sequences, mask, prompt)
            finally:
                restore_kernels()
        diff = runs[FLA] - runs[TORCH]
        sequence_log_ratio = diff.mean(dim=1)  # GSPO's sequence-level log ratio, if old and new differed only so
        return {
            "tokens": int(diff.numel()),
            "max_abs_token_diff": float(diff.abs().max()),
            "mean_abs_token_diff": float(diff.abs().mean()),
            "max_abs_sequence_log_ratio": float(sequence_log_ratio.abs().max()),
        }

    def completion_logprobs(self, sequences: Any, mask: Any, prompt: int) -> Any:
        import torch

        rows = []
        with torch.no_grad():
            for row in range(sequences.shape[0]):
                logits = self.model(input_ids=sequences[row : row + 1], attention_mask=mask[row : row + 1]).logits
                logp = torch.log_softmax(logits[0, prompt - 1 : -1].float(), dim=-1)
                rows.append(logp.gather(1, sequences[row, prompt:, None])[:, 0])
        return torch.stack(rows)


def run_rollouts(plan: dict[str, Any]) -> int:
    """The child process entry: the result JSON is written after every variant."""
    from medgspo.utils.io import write_json

    deadline = time.perf_counter() + (plan["deadline"] - time.time())
    stage = Rollouts(plan, lambda: write_json(plan["result"], stage.result))
    stage.result["machine"] = probes.machine()
    try:
        stage.run(plan["variants"], deadline)
        result = stage.result
    except Exception:  # noqa: BLE001 - recorded for the JSON
        result = stage.result | {"status": "error", "error": traceback.format_exc()[-4000:]}
    result["peak_gpu_memory_gib"] = probes.peak_memory_gib()
    write_json(Path(plan["result"]), result)
    return 0 if result["status"] == "ok" else 1
