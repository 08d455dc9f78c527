"""Embedding compression baselines a user would otherwise pick: the hashing trick, QR, hash
embeddings, double hashing, mixed-dimension embeddings."""
