"""Evaluation (`medgspo eval`): open questions scored by the judge (open_ended) and multiple choice (mcq, layouts/),
one shared runner (runner) that loads each model once, pure metrics and answer extraction, and the plot."""
