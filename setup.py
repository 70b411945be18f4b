"""
Builds relay's optional C accelerator, ``relay._speedups``.

Everything else is configured in pyproject.toml. The extension is optional:
where it cannot be compiled (no C compiler, no Python headers), installation
goes on without it and relay uses its pure-Python code.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("relay._speedups", sources=["relay/_speedups.c"], optional=True),
    ],
)
