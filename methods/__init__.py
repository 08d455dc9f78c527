"""Paper methods: one file (or small folder) per method, registered with ``@register_model`` or
``@register_embedding``; ``repro.registry.load_plugins`` imports every module found here."""
