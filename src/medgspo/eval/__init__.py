"""Evaluation (`medgspo eval`): judged open questions (open_ended); multiple choice on published benchmark files (mcq,
benchmarks, layouts/); one runner that loads each model once; metrics, mcq_metrics, extraction, the plot."""
