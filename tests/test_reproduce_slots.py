"""Smoke twins of the reproduction rows on ObSuRF's, SRN's and semantic SRN's data (the SRT
rows: test_reproduce.py): each `make reproduce-<row>-smoke` converts a tiny dataset in the
real layout, trains, scores, renders and tabulates."""
import json

import pytest

from fixtures.smoke import assert_smoke_row, make_smoke


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("reproduce")


@pytest.mark.parametrize("row", ["osrt-clevr3d", "obsurf-clevr3d", "obsurf-msn"])
def test_smoke_twin(out, row):
    assert_smoke_row(out, row, make_smoke(row, out))


@pytest.mark.parametrize("row", ["srn-cars", "srn-chairs"])
def test_srn_smoke_twin_scores_one_and_two_shot(out, row):
    assert_smoke_row(out, row, make_smoke(row, out), metrics=("metrics-one-shot.json", "metrics-two-shot.json"))


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
