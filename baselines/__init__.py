"""The baseline zoo: one model per file, each registered with ``@register_model``."""
