"""Smoke twins of semantic SRN's reproduction rows: SRN+Linear (an SRN trained, then a
linear head fitted on it from its run folder) and the joint model, on a tiny dataset in the
semantic scenes layout: each scores mIoU next to the majority-class baseline."""
import json

import pytest

from fixtures.smoke import assert_smoke_row, make_smoke


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("reproduce")


@pytest.mark.parametrize("row", ["semantic-chairs", "semantic-tables", "semantic-srn-chairs", "semantic-srn-tables"])
def test_semantic_smoke_twin(out, row):
    assert_smoke_row(out, row, make_smoke(row, out))
    results = json.loads((out / row / "metrics.json").read_text())["results"]
    assert 0 <= results["miou"] <= 1 and 0 <= results["baseline_majority_miou"] <= 1, results
    if row.startswith("semantic-srn-"):
        return
    config = (out / row / "run" / "config.yaml").read_text()
    assert "init_from: ../srn" in config, config  # the SRN it was fitted on, relative to the run folder
