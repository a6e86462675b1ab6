"""perennial: maintainable, animatable full-body human avatars on the Anny body template."""

__version__ = "0.1.0"
