"""`make peers`: adrepro's DeepFM beside FuxiCTR's and DeepCTR-Torch's on the same rows (peers/README.md).

Everything here but ``export``, ``measure``, ``report`` and ``run_adrepro`` runs in a peer library's
own virtual environment, so this package and ``peers.common`` import nothing beyond the standard
library."""
