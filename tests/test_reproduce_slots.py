"""Smoke twins of the reproduction rows on ObSuRF's and SRN's data (the SRT rows:
test_reproduce.py; semantic SRN's: test_reproduce_semantic.py): each `make
reproduce-<row>-smoke` converts a tiny dataset in the real layout, trains, scores, renders and
tabulates."""
import pytest

from fixtures.smoke import assert_smoke_row, make_smoke, smoke_folder  # noqa: F401 (fixture "out")


@pytest.mark.parametrize("row", ["osrt-clevr3d", "obsurf-clevr3d", "obsurf-msn"])
def test_smoke_twin(out, row):
    assert_smoke_row(out, row, make_smoke(row, out))


@pytest.mark.parametrize("row", ["srn-cars", "srn-chairs"])
def test_srn_smoke_twin_scores_one_and_two_shot(out, row):
    assert_smoke_row(out, row, make_smoke(row, out), metrics=("metrics-one-shot.json", "metrics-two-shot.json"))
