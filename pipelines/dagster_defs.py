"""What ``dagster-webserver -m pipelines.dagster_defs`` loads: the asset graph of the
``pipeline.yaml`` named by ``TANDEM_PIPELINE`` (``tandem pipeline ui`` sets it)."""

import os

from pipelines.pipeline_assets import build_definitions
from pipelines.pipeline_spec import load_spec

defs = build_definitions(load_spec(os.environ["TANDEM_PIPELINE"]))
