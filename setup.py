"""Builds the optional C cores of the Merkle tree (chain/_merkle.c) and of the index's sparse
Merkle tree (chain/_smt.c), on OpenSSL's libcrypto.

Everything else is in pyproject.toml. ``optional=True``: without a C compiler or the
OpenSSL headers (Debian: gcc and libssl-dev) the build skips the extension and chain.merkle
uses its pure-Python fallback, which gives identical results, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "chain._merkle",
            sources=["chain/_merkle.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "chain._smt",
            sources=["chain/_smt.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ]
)
