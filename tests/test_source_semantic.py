import pickle

import numpy as np
import pytest

from conftest import assert_bad_input, run_command
from fixtures.semantic import make_semantic_dataset
from scenetools.convert import convert
from scenetools.errors import BadInput
from scenetools.scenefile import SceneFile
from scenetools.sources.semantic import SemanticSource, read_class_names

CHAIR_CLASSES = ["background", "chair/chair_head", "chair/chair_back", "chair/chair_arm", "chair/chair_base",
                 "chair/chair_seat"]


def test_object_folder_converts_views_segmentation_classes_and_splits(tmp_path):
    truth = make_semantic_dataset(tmp_path / "semantic_srn_data", 5)
    out = tmp_path / "out.h5"
    result = run_command("convert", "--from", "semantic", truth["object_folder"], out)
    assert result.returncode == 0, result.stderr
    scenes = SceneFile(out)

    assert scenes.source == "semantic:chair"
    assert truth["classes"] == CHAIR_CLASSES and list(scenes.semantic_classes) == CHAIR_CLASSES
    assert scenes.fields == {"semantic": "uint8"}
    assert list(scenes.names) == [s["name"] for s in truth["scenes"]]
    assert list(scenes.split_of) == ["train", "train", "val", "val", "test"]
    assert list(scenes.categories) == ["Chair"] * 5
    assert scenes.view_count.tolist() == [len(s["pool"]) for s in truth["scenes"]]
    assert scenes.render_range is None and np.isnan(scenes.near_far).all()
    assert scenes.source_info["background_class"] == 0

    # SRN's intrinsics: f = 525/512 * 32, cx = cy = 16, plus half a pixel to our pixel centres.
    K = np.array([[32.8125, 0, 16.5], [0, 32.8125, 16.5], [0, 0, 1]])
    seen = set()
    for s, expected in enumerate(truth["scenes"]):
        scene = scenes.scene(s)
        assert scene.semantic.dtype == np.uint8
        for view, p in enumerate(expected["pool"]):
            entry = truth["pool"][p]
            np.testing.assert_array_equal(scene.semantic[view], entry["seg"])
            np.testing.assert_array_equal(scene.rgb[view], entry["rgb"])  # transparent black -> white
            background = entry["seg"] == 0
            assert (scene.rgb[view][background] == 255).all()
            seen |= set(np.unique(scene.semantic[view]).tolist())
        np.testing.assert_allclose(scene.camera_to_world, expected["camera_to_world"], atol=1e-6)
        np.testing.assert_array_equal(scene.intrinsics, np.broadcast_to(K, scene.intrinsics.shape))
    assert seen == set(range(6))


def test_split_folder_reads_the_class_file_next_to_it(tmp_path):
    truth = make_semantic_dataset(tmp_path / "data", 6, "Table")
    source = SemanticSource(truth["object_folder"] / "Table.val")
    assert [(r.name, r.split) for r in source.scan()] == [(s["name"], "val") for s in truth["scenes"][2:4]]
    scenes = SceneFile(convert(source, tmp_path / "val.h5", codec="raw"))
    assert scenes.source == "semantic:table" and list(scenes.categories) == ["Table", "Table"]
    assert list(scenes.semantic_classes) == ["background", "table/regular_table/tabletop",
                                             "table/regular_table/table_base"]
    expected = truth["scenes"][3]
    np.testing.assert_array_equal(scenes.scene(1).semantic, np.stack([truth["pool"][p]["seg"]
                                                                      for p in expected["pool"]]))


def test_class_ids_with_gaps_a_named_background_and_uint16(tmp_path):
    lines = ["0 nothing leaf", "2 chair/chair_back subcomponents", "5 chair/chair_seat subcomponents"]
    truth = make_semantic_dataset(tmp_path / "gaps", 3, class_lines=lines, seg_dtype=np.uint8)
    assert truth["classes"] == ["nothing", "unused_1", "chair/chair_back", "unused_3", "unused_4",
                                "chair/chair_seat"]
    scenes = SceneFile(convert(SemanticSource(truth["object_folder"]), tmp_path / "gaps.h5", codec="raw"))
    assert list(scenes.semantic_classes) == truth["classes"]
    ids = np.unique(scenes.read_views(0, fields=("semantic",))["semantic"])
    assert ids.tolist() == [0, 2, 5]

    many = [f"{i} part_{i} leaf" for i in range(1, 300)]
    truth = make_semantic_dataset(tmp_path / "many", 3, class_lines=many, seg_dtype=np.float64)
    source = SemanticSource(truth["object_folder"])
    assert source.info.fields == {"semantic": "uint16"} and len(source.info.attrs["semantic_classes"]) == 300
    scenes = SceneFile(convert(source, tmp_path / "many.h5", codec="png"))
    semantic = scenes.scene(2).semantic
    assert semantic.dtype == np.uint16 and semantic.max() > 255
    np.testing.assert_array_equal(semantic, np.stack([truth["pool"][p]["seg"] for p in truth["scenes"][2]["pool"]]))


def test_class_file_format_is_checked(tmp_path):
    path = tmp_path / "Chair-level-1.txt"
    path.write_text("1 chair/chair_head subcomponents\n\n2 chair/chair_back subcomponents\n")
    assert read_class_names(path) == ["background", "chair/chair_head", "chair/chair_back"]
    for text, message in [("chair/chair_head 1\n", "line 1: expected '<class id> <part name>"),
                          ("1\n", "line 1"), ("1 a x\n1 b x\n", "class id 1 is given twice"), ("\n", "no classes")]:
        path.write_text(text)
        with pytest.raises(BadInput, match=message) as error:
            read_class_names(path)
        assert error.value.path == path


def test_source_pickles_small_and_loads_after_unpickling(tmp_path):
    truth = make_semantic_dataset(tmp_path / "data", 3)
    source = SemanticSource(truth["object_folder"])
    data = pickle.dumps(source)
    assert len(data) < 3000
    scene = pickle.loads(data).load(source.scan()[1:2])[0]
    assert scene.name == truth["scenes"][1]["name"] and scene.semantic.shape == (4, 32, 32)


@pytest.mark.parametrize("case", ["seg shape", "no class file", "no class file for a split folder"])
def test_bad_input_names_the_file(tmp_path, case):
    truth = make_semantic_dataset(tmp_path / "data", 3)
    folder, IN, out = truth["object_folder"], truth["object_folder"], tmp_path / "out.h5"
    if case == "seg shape":
        bad = truth["scenes"][1]["folder"] / "seg" / "000002.npy"
        np.save(bad, np.zeros((16, 16), np.int64))
    else:
        bad = folder / "Chair-level-1.txt"
        bad.unlink()
        if case == "no class file for a split folder":
            IN = folder / "Chair.test"
    assert_bad_input(run_command("convert", "--from", "semantic", IN, out), bad, out)


def test_malformed_views_raise_bad_input_naming_the_file(tmp_path):
    truth = make_semantic_dataset(tmp_path / "data", 3)
    source = SemanticSource(truth["object_folder"])
    refs = source.scan()
    folder = truth["scenes"][0]["folder"]
    seg = folder / "seg" / "000001.npy"
    np.save(seg, np.full((32, 32), 6, np.int64))
    with pytest.raises(BadInput, match=r"class ids 6..6 outside the 6 classes 0..5") as error:
        source.load(refs[:1])
    assert error.value.path == seg
    np.save(seg, np.full((32, 32), 0.5))
    with pytest.raises(BadInput, match="expected integer class ids") as error:
        source.load(refs[:1])
    seg.unlink()
    with pytest.raises(BadInput, match="no such file") as error:
        source.load(refs[:1])
    assert error.value.path == seg
    with pytest.raises(BadInput, match="neither a semantic scenes object folder") as error:
        SemanticSource(tmp_path / "data")
    assert error.value.path == tmp_path / "data"
