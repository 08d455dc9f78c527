"""Data contract: sources, preparation into the columnar cache, batches of tensors."""
