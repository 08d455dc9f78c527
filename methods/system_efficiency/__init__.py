"""System-efficiency methods of the review: the HPC training ladder (large batch, compiled steps,
mixed precision, multi-hash and low-precision embeddings), measured rung by rung, and data-parallel
training with DDP communication hooks beside it."""
