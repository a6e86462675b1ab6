"""Import NVIDIA warp quietly, once.

warp prints a banner (and a CUDA warning on machines without a driver) when it
initialises; perennial silences both. The kernel cache honours ``WARP_CACHE_PATH``.
"""

from __future__ import annotations

import functools
import os


@functools.cache
def warp():
    """The initialised ``warp`` module (quiet)."""
    import warp as wp

    wp.config.quiet = True
    if hasattr(wp.config, "log_level") and hasattr(wp, "LOG_WARNING"):
        wp.config.log_level = wp.LOG_WARNING
    if os.environ.get("WARP_CACHE_PATH"):
        wp.config.kernel_cache_dir = os.environ["WARP_CACHE_PATH"]
    fd = os.dup(2)
    try:  # the "no CUDA driver" warning is written straight to fd 2 by the C runtime
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            wp.init()
    finally:
        os.dup2(fd, 2)
        os.close(fd)
    return wp
