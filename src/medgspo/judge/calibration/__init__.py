"""Measuring a judge against labelled verdicts: the run, the metrics, the confusion-matrix plot."""
