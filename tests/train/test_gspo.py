"""GSPO against the paper's formulas, the on-policy trap, and a short CPU run of the stage."""

import json

import pytest
import torch

from medgspo.train.batching import clipping_diagnosis
from medgspo.train.configs import MedGSPOConfig


@pytest.fixture(scope="module")
def trainer_factory(tiny_model_dir, tmp_path_factory):
    """Build a real GRPOTrainer on the tiny model, configured by our MedGSPOConfig."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    def build(**overrides):
        args = MedGSPOConfig(
            output_dir=str(tmp_path_factory.mktemp("gspo")),
            per_device_train_batch_size=4,
            gradient_accumulation_steps=1,
            num_generations=2,
            max_completion_length=8,
            use_cpu=True,
            report_to="none",
            **overrides,
        )
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        tok = AutoTokenizer.from_pretrained(tiny_model_dir)
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": "问？"}]}] * 4)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=lambda completions, **kw: [0.0] * len(completions),
            args=args,
            train_dataset=data,
            processing_class=tok,
        )
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's training loop; no loop runs here
        return trainer

    return build


def make_inputs(trainer, seed=0):
    """Two groups of two sampled-looking sequences with ragged completion masks."""
    g = torch.Generator().manual_seed(seed)
    vocab = trainer.model.config.vocab_size
    prompt_ids = torch.randint(10, vocab, (4, 5), generator=g)
    completion_ids = torch.randint(10, vocab, (4, 6), generator=g)
    completion_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0], [1] * 3 + [0] * 3])
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
    }


def token_logps(trainer, inputs):
    """log pi_theta(o_t | q, o_<t) as the trainer computes it (the same forward the loss uses)."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, ids.shape[1] - 5)
    return logps


def group_advantages(rewards, group_size):
    """A_i = (r_i - mean(group)) / std(group), the group-normalised advantage (TRL's scale_rewards='group')."""
    r = torch.tensor(rewards).view(-1, group_size)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)


def test_sequence_level_loss_matches_the_paper(trainer_factory):
    eps_low, eps_high = 0.01, 0.02
    trainer = trainer_factory(loss_type="grpo", epsilon=eps_low, epsilon_high=eps_high)
    inputs = make_inputs(trainer)
    mask = inputs["completion_mask"].float()
    logp = token_logps(trainer, inputs)
    # pi_old: the current policy shifted per sequence, so ratios land both inside and outside [1-eps, 1+eps].
    shift = torch.tensor([0.05, -0.005, -0.05, 0.001]).unsqueeze(1)
    old = logp - shift
    adv = group_advantages([2.0, -1.0, 0.5, 0.5 + 1e-3], group_size=2)

    # GSPO by hand: s_i = exp(mean_t log(pi/pi_old)), J = mean_i min(s_i A_i, clip(s_i, 1-e_l, 1+e_h) A_i).
    s = torch.exp(((logp - old) * mask).sum(1) / mask.sum(1))  # = exp(shift): 1.0513, 0.9950, 0.9512, 1.0010
    clipped = s.clamp(1 - eps_low, 1 + eps_high)  # 1.02, 0.995, 0.99, 1.001
    expected = -torch.min(s * adv, clipped * adv).mean()

    loss = trainer._compute_loss(trainer.model, {**inputs, "advantages": adv, "old_per_token_logps": old})
    assert torch.allclose(loss.detach(), expected, atol=1e-5), (loss.item(), expected.item())
    # Sequences 0 (A>0, s>1+e_h) and 2 (A<0... s<1-e_l) are clipped: half of the batch.
    assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] == pytest.approx(0.5)


def test_on_policy_update_has_ratio_one_and_never_clips(trainer_factory):
    trainer = trainer_factory(loss_type="grpo", epsilon=3e-4, epsilon_high=4e-4)
    inputs = make_inputs(trainer, seed=1)
    adv = group_advantages([1.0, 0.0, 2.0, -1.0], group_size=2)
    # No old log-probs: TRL's on-policy path (steps_per_generation <= accumulation, one iteration) uses pi itself.
    loss = trainer._compute_loss(trainer.model, {**inputs, "advantages": adv})
    assert torch.allclose(loss.detach(), -adv.mean(), atol=1e-6)  # s_i == 1 exactly, so J = mean(A_i)
    assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] == 0.0


def test_card_settings_are_diagnosed_as_on_policy_and_length_weighted():
    notes = clipping_diagnosis(4, None, 1, "sequence", "dr_grpo")
    assert len(notes) == 2
    assert "ratio is exactly 1" in notes[0] and "--steps_per_generation" in notes[0]
    assert "--loss_type grpo" in notes[1]
    assert clipping_diagnosis(4, 16, 1, "sequence", "grpo") == []
    assert len(clipping_diagnosis(4, 4, 2, "sequence", "grpo")) == 0  # several iterations also move the ratio


@pytest.mark.slow
def test_gspo_stage_trains_lora_and_writes_metrics(tiny_model_dir, tmp_path, bundled_records):
    from safetensors.torch import load_file

    from medgspo.cli import main

    out = tmp_path / "gspo"
    argv = [
        "gspo",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--max_prompts",
        "8",
        "--max_completion_length",
        "32",
        "--save_steps",
        "1",
        "--temperature",
        "1.0",
        "--per_device_train_batch_size",
        "8",
        "--num_generations",
        "4",
    ]  # varied samples, so the advantages are not all zero
    assert main(argv) == 0
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # B starts at zero: training moved it
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "reward_smoothed", "judge/tier_E", "clip_ratio/region_mean", "completions/mean_length"):
        assert key in rows[0], key
    assert "clip_ratio/region_mean" in rows[1]  # the rollout batch's second (off-policy) minibatch is logged too
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "completion_length.png",
        "kl_and_clipping.png",
        "reward.png",
        "tier_mix.png",
    ]
    summary = json.loads((out / "gspo_summary.json").read_text())
    assert summary["global_step"] == 2 and (summary["backend"], summary["processes"]) == ("transformers", 1)
    # 8 per device x 2 steps per generation = 16 rollouts per round, below the cap of 32: 16 in flight
    assert summary["judge"]["concurrency"] == 16 and summary["rollouts"] == "transformers"
    kernels = summary["gated_deltanet_kernels"]  # what each phase ran on, and why
    assert (kernels["no_grad"], kernels["training"], kernels["why"]) == (
        "torch",
        "torch",
        "fla is used on CUDA GPUs only; device: cpu",
    )


@pytest.mark.slow
def test_sigkill_then_resume_reaches_the_same_final_step(tiny_model_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "gspo"
    argv = [
        sys.executable,
        "-m",
        "medgspo.cli",
        "-q",
        "gspo",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--max_steps",
        "4",
        "--max_prompts",
        "8",
        "--max_completion_length",
        "12",
        "--save_steps",
        "1",
        "--save_total_limit",
        "10",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "gspo_summary.json").exists()  # it really died mid-run

    done = subprocess.run([*argv, "--resume", "true"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "gspo_summary.json").read_text())
    assert summary["global_step"] == 4
    assert int(summary["resumed_from"].rsplit("-", 1)[1]) >= 2
    from medgspo.train.plots import read_metrics

    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4]


def test_a_resumed_run_pays_no_judgment_twice(tmp_path, monkeypatch):
    """The GSPO judge reward is cached on disk: a second run (a resume after a kill) re-judges nothing."""
    import asyncio

    from fake_openai_server import FakeOpenAIServer

    from medgspo.judge.config import JudgeConfig
    from medgspo.rewards import RewardArguments, get_reward_funcs

    monkeypatch.setenv("DEEPSEEK_API_KEY", "test-key")
    completions = ["我想了想。\n</think>\n\n答案一", "我想了想。\n</think>\n\n答案二"]
    columns = {"question": ["问？", "问？"], "reference": ["答案一", "答案一"]}
    with FakeOpenAIServer() as server:
        config = JudgeConfig(
            judge_backend="openai", judge_base_url=server.base_url, judge_cache=str(tmp_path / "c.db")
        )
        for _ in range(2):  # the first run, then the resumed one with a fresh process-level judge
            (judge,) = get_reward_funcs(RewardArguments(), config)
            scores = asyncio.run(judge(prompts=[None, None], completions=completions, **columns))
            assert scores == [2.0, 0.5]
        assert len(server.requests) == 2
