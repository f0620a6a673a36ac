"""Training: the SFT and GSPO stages on TRL, their configs and back-ends (transformers, Unsloth, vLLM), the
batch and cost arithmetic behind `medgspo plan`, callbacks, checkpoints and training plots.
"""
