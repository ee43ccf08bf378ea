"""StyleFlow: the flow reproduces StyleFlow's own numbers (kit case `styleflow_flow`); its files are read safely."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

TOL = 2e-3  # the kit's tolerance for the adaptive solver


@pytest.fixture(scope="module")
def flow_file(tmp_path_factory):
    from conftest import kit_or_skip

    kit_or_skip()
    import weights

    path = tmp_path_factory.mktemp("styleflow") / "modellarge10k.pt"
    torch.save(weights.make_state_dict(weights.load_manifest("styleflow_cnf"), "flow", 71), path)
    return path


def source_conditions(arrays) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([arrays["lighting"], arrays["attributes"]], axis=1))


def test_flow_reproduces_styleflow_forward_round_trip_and_edits(flow_file, styleflow_case):
    from e4ecli.edits.ops import styleflow_edit
    from e4ecli.hub.styleflow import load_flow

    meta, arrays = styleflow_case
    flow = load_flow(flow_file)
    w, source = torch.from_numpy(arrays["wplus"]), source_conditions(arrays)
    diffs = {}
    with torch.no_grad():
        diffs["z"] = np.abs(flow(w, source).numpy() - arrays["z"]).max()
        diffs["w_roundtrip"] = np.abs(styleflow_edit(w, source, source, flow=flow).numpy() - arrays["w_roundtrip"]).max()
        targets = []
        for e in meta["edits"]:
            target = source.clone()
            target[:, 9 + e["attribute_index"]] = e["value"]
            targets.append(target)
        # all three edits from one forward pass: F = 3 targets per latent, latent-major
        stacked = torch.stack(targets, dim=1).reshape(-1, 17)
        edited = styleflow_edit(w, source, stacked, flow=flow).reshape(w.shape[0], len(targets), 18, 512)
        for k, e in enumerate(meta["edits"]):
            diffs[e["array"]] = np.abs(edited[:, k].numpy() - arrays[e["array"]]).max()
    print("styleflow library max |diff|:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert set(diffs) == {"z", "w_roundtrip", "w_edit0", "w_edit1", "w_edit2"}
    assert max(diffs.values()) <= TOL, diffs
    # the edits really move the latents (a do-nothing flow would fail here)
    assert np.abs(arrays["w_edit0"] - arrays["wplus"]).max() > 50 * TOL


def test_styleflow_edit_refuses_latents_without_18_styles(flow_file):
    from e4ecli.edits.ops import styleflow_edit
    from e4ecli.hub.styleflow import load_flow

    with pytest.raises(ValueError, match="18 styles"):
        styleflow_edit(torch.zeros(1, 14, 512), torch.zeros(1, 17), torch.zeros(1, 17), flow=load_flow(flow_file))


@pytest.mark.parametrize("change, complaint", [
    (lambda sd: sd.pop("chain.1.sqrt_end_time"), "missing key 'chain.1.sqrt_end_time'"),
    (lambda sd: sd.__setitem__("chain.1.odefunc.diffeq.layers.2._hyper_gate.weight", torch.zeros(512, 17)),
     r"'chain.1.odefunc.diffeq.layers.2._hyper_gate.weight' has shape \(512, 17\), expected \(512, 18\)"),
    (lambda sd: sd.__setitem__("chain.3.weight", torch.zeros(512)), "unexpected key 'chain.3.weight'"),
])
def test_flow_file_that_does_not_fit_is_refused_naming_file_and_mismatch(flow_file, tmp_path, change, complaint):
    from e4ecli.hub.styleflow import StyleflowFileError, load_flow

    sd = torch.load(flow_file, weights_only=True)
    change(sd)
    bad = tmp_path / "bad_flow.pt"
    torch.save(sd, bad)
    with pytest.raises(StyleflowFileError, match=complaint) as info:
        load_flow(bad)
    assert str(bad) in str(info.value)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo owned",))


def test_numpy_pickle_reader_admits_arrays_and_containers_only(tmp_path):
    from e4ecli.hub.styleflow import StyleflowFileError, read_numpy_pickle

    good = {"Latent": [np.arange(6, dtype=np.float32).reshape(1, 2, 3), np.ones((1, 2, 3))], "n": 2, "names": ("a", "b")}
    for protocol in (2, 4):
        path = tmp_path / f"good{protocol}.pickle"
        path.write_bytes(pickle.dumps(good, protocol=protocol))
        back = read_numpy_pickle(path)
        assert back["n"] == 2 and back["names"] == ("a", "b")
        np.testing.assert_array_equal(back["Latent"][0], good["Latent"][0])
        assert back["Latent"][0].dtype == np.float32
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"Latent": [_Evil()]}))
    with pytest.raises(StyleflowFileError, match="refused to load: the pickle references the global .*system"):
        read_numpy_pickle(evil)
    objects = tmp_path / "objects.pickle"
    objects.write_bytes(pickle.dumps(np.array([{"a": 1}], dtype=object)))
    with pytest.raises(StyleflowFileError, match="only numeric arrays"):
        read_numpy_pickle(objects)


def test_target_conditions_set_attributes_and_move_lighting_towards_presets():
    from e4ecli.edits.styleflow import parse_name, target_conditions

    source = torch.arange(34, dtype=torch.float32).reshape(2, 17) / 10
    preset_a, preset_b = torch.full((9,), 5.0), torch.linspace(-1, 1, 9)
    values = [torch.tensor([60.0, 20.0]), 0.5, torch.tensor([0.0, 1.0])]
    targets = [parse_name("age"), parse_name("light_front"), parse_name("LIGHT_NONE")]
    got = target_conditions(source, targets, values, {"light_front": preset_a, "light_none": preset_b})
    light = source[:, :9]
    want_light = light + 0.5 * (preset_a - light) + torch.tensor([[0.0], [1.0]]) * (preset_b - light)
    assert torch.allclose(got[:, :9], want_light)
    assert got[:, 9 + 6].tolist() == [60.0, 20.0]
    keep = [i for i in range(9, 17) if i != 15]
    assert torch.equal(got[:, keep], source[:, keep])


def test_attributes_file_may_give_part_of_the_condition():
    from e4ecli.edits.styleflow import StyleflowSpecError, condition_from_json

    cond, missing = condition_from_json({"attributes": {"Age": 34, "gender": 1}}, "f.attributes.json")
    assert cond[9 + 6] == 34 and cond[9] == 1
    assert missing == ["glasses", "yaw", "pitch", "baldness", "beard", "expression", "lighting"]
    with pytest.raises(StyleflowSpecError, match="f.json: 'lighting' must be a list of 9"):
        condition_from_json({"lighting": [1, 2]}, "f.json")
    with pytest.raises(StyleflowSpecError, match="unknown attribute 'height'"):
        condition_from_json({"attributes": {"height": 2}}, "f.json")


def test_numpy_pickle_reader_refuses_nesting_bombs_before_unpickling(tmp_path):
    from e4ecli.hub.styleflow import StyleflowFileError, read_numpy_pickle

    bomb = tmp_path / "deep.pickle"
    bomb.write_bytes(b"\x80\x02" + b"(" * 5000 + b"t" * 5000 + b".")  # a 5000-deep tuple
    with pytest.raises(StyleflowFileError, match="deep.pickle: refused to load"):
        read_numpy_pickle(bomb)
