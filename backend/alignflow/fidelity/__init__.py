"""Label drift: the evaluator and reward segmenters, the mask-fidelity metric and fidelity filtering at generation."""
