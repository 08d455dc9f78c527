"""adrepro: the harness (data, metrics, training, reporting, CLI). It knows no single method."""

__version__ = "0.1.0"
