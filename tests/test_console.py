"""The console: the numbers a stage's bar shows, and known library warnings shown once as what they mean."""

import logging

from medgspo.utils.console import _KnownWarnings, progress_text


def test_progress_text_shows_the_loss_or_the_reward_and_tier_mix():
    assert progress_text({"loss": 0.5, "grad_norm": 1.0, "learning_rate": 1e-4, "epoch": 1.0}) == "loss 0.500"
    logs = {"reward": -0.25, "judge/tier_A": 3.0, "judge/tier_E": 5.0, "judge/abstained": 2.0, "loss": 0.1}
    assert progress_text(logs) == "reward -0.250 | judge A 3 E 5 none 2"
    assert progress_text({"train_runtime": 3.0}) == ""


def test_a_known_warning_is_shown_once_as_what_it_means_and_ours_pass():
    known = _KnownWarnings()
    fallback = (
        "`causal_conv1d_fn` is falling back to its reference PyTorch implementation because `causal_conv1d` is "
        "either not installed or doesn't support the device of the inputs. This is correct but much slower."
    )
    records = [
        logging.LogRecord("transformers.integrations.hub_kernels", logging.WARNING, "", 0, m, (), None)
        for m in (fallback, fallback.replace("causal_conv1d_fn", "chunk_gated_delta_rule"))
    ]
    assert known.filter(records[0]) and records[0].getMessage().startswith("note (shown once): Qwen3.5")
    assert not known.filter(records[1])  # the same meaning again: dropped
    ours = logging.LogRecord(
        "medgspo.train.backends", logging.WARNING, "", 0, "install flash-linear-attention", (), None
    )
    assert known.filter(ours) and ours.getMessage() == "install flash-linear-attention"
    other = logging.LogRecord("transformers.trainer", logging.WARNING, "", 0, "something new", (), None)
    assert known.filter(other) and other.getMessage() == "something new"
