"""Model interaction methods of the review: the pre-ranking -> ranking -> re-ranking cascade (RDPR, the oracle, creative selection)."""
