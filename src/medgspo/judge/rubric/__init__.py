"""The rubric: the tiers, the prompt and its defences, the verdict parser (pure)."""
