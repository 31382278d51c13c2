"""Smoke twins of semantic SRN's reproduction rows (a module of their own, so that they run
beside the other rows' twins): each `make reproduce-<row>-smoke` converts a tiny dataset in
the semantic scenes layout, trains, scores mIoU, renders and tabulates."""
import json

import pytest

from fixtures.smoke import assert_smoke_row, make_smoke, smoke_folder  # noqa: F401 (fixture "out")


@pytest.mark.parametrize("row", ["semantic-chairs", "semantic-srn-chairs"])
def test_semantic_smoke_twin_scores_miou(out, row):
    """SRN+Linear rows train an SRN, then fit the head on its run folder; the joint rows
    train semantic SRN on whole images. Each scores mIoU next to the majority class. (The
    Table rows run the same pipeline on a dataset with another class file.)"""
    assert_smoke_row(out, row, make_smoke(row, out))
    results = json.loads((out / row / "metrics.json").read_text())["results"]
    assert 0 <= results["miou"] <= 1 and 0 <= results["baseline_majority_miou"] <= 1, results
    if not row.startswith("semantic-srn-"):
        assert "init_from: ../srn" in (out / row / "run" / "config.yaml").read_text()  # relative to the run folder
