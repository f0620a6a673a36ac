"""The offline reference judge: a lexical heuristic with key terms and a medical vocabulary."""
