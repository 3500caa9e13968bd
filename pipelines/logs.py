"""Logging setup shared by the CLI and Ray workers."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once; ``TANDEM_LOG_LEVEL`` overrides the default INFO."""
    level = level or os.environ.get("TANDEM_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format=FORMAT, datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    for noisy in ("urllib3", "filelock", "alembic", "matplotlib", "numba", "PIL", "botocore", "aiobotocore",
                  "s3fs", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
