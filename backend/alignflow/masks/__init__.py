"""Mask synthesis (paper Section 3.3): a flow-matching mask generator, post-processing and best-of-K filtering."""
