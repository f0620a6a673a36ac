"""``medgspo plan``: what a recipe will do before it runs (batch arithmetic, judge calls and cost, clipping,
memory); it trains nothing.
"""
