import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# a tiny demo: 2 photos x 4 views, 30 deg apart
TINY_DEMO = {
    "photos": ["chelsea", "motorcycle"],
    "azimuths": [-45, -15, 15, 45],
    "elevations": [0],
}


@pytest.fixture(scope="session")
def offline_backbone():
    from labelgen.backbones import MobileNetV2

    return MobileNetV2()


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    from labelgen.demo import build_demo

    root = tmp_path_factory.mktemp("demo")
    return build_demo({**TINY_DEMO, "root": str(root)})


def tiny_demo_args(manifest: str) -> list[str]:
    """Command-line overrides that run the pipeline on the tiny demo."""
    return [f"data.manifest={manifest}", "pairing.bin_deg=30"]
