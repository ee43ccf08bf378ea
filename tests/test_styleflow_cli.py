"""`e4e edit/video -d styleflow:NAME`: kit case `styleflow_flow` through the CLI, composition, sweeps,
attributes from files, overrides and the estimator (its samples downloaded from a local HTTP server)."""
from __future__ import annotations

import functools
import http.server
import json
import pickle
import threading

import numpy as np
import pytest
import torch

from editing_kit import g64_path, run_cli  # noqa: F401  (fixture)

TOL = 2e-3
NAMES = ["gender", "glasses", "yaw", "pitch", "baldness", "beard", "age", "expression"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, styleflow_case):
    """A 1024 px generator with 4 channels per layer (18 styles, renders fast), the kit's flow, the kit's latents."""
    import weights

    from e4ecli.models.stylegan2 import Generator

    root = tmp_path_factory.mktemp("styleflow_cli")
    torch.manual_seed(0)
    g = Generator(1024, 512, n_mlp=2, channels={2 ** k: 4 for k in range(2, 11)})
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(512)}, root / "g1024.pt")
    torch.save(weights.make_state_dict(weights.load_manifest("styleflow_cnf"), "flow", 71), root / "flow.pt")
    _, arrays = styleflow_case
    (root / "in").mkdir()
    for i in range(2):
        np.save(root / "in" / f"f{i}.npy", arrays["wplus"][i])
        sidecar = {"attributes": {n: float(v) for n, v in zip(NAMES, arrays["attributes"][i])},
                   "lighting": [float(v) for v in arrays["lighting"][i]]}
        (root / "in" / f"f{i}.attributes.json").write_text(json.dumps(sidecar))
    return root


def edit(files, out, *args):
    return run_cli(["edit", files / "in", "-o", out, "-c", files / "g1024.pt", "--styleflow-weights", files / "flow.pt", "--size", "32", *args])


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_cli_reproduces_the_kit_edits_and_round_trip(files, styleflow_case, tmp_path):
    meta, arrays = styleflow_case
    diffs = {}
    for e in meta["edits"]:
        out = tmp_path / e["array"]
        r = edit(files, out, "-d", f"styleflow:{NAMES[e['attribute_index']]}", "-s", e["value"], "--save-latents")
        assert r.exit_code == 0, r.output
        got = np.stack([np.load(out / f"f{i}.npy") for i in range(2)])
        diffs[e["array"]] = np.abs(got - arrays[e["array"]]).max()
        assert (out / "f0.png").is_file()
    # the round trip: each latent's age set to the value it already has
    for i in range(2):
        out = tmp_path / f"rt{i}"
        r = run_cli(["edit", files / "in" / f"f{i}.npy", "-o", out, "-c", files / "g1024.pt", "--styleflow-weights", files / "flow.pt",
                     "-d", "styleflow:age", "-s", repr(float(arrays["attributes"][i, 6])), "--latents-only"])
        assert r.exit_code == 0, r.output
        diffs[f"w_roundtrip[{i}]"] = np.abs(np.load(out / f"f{i}.npy") - arrays["w_roundtrip"][i]).max()
    print("styleflow CLI max |diff|:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert max(diffs.values()) <= TOL, diffs
    record = manifest(tmp_path / "w_edit0")[0]["styleflow"]
    assert record["estimated"] == [] and record["from"].endswith("f0.attributes.json")
    assert record["attributes"]["gender"] == pytest.approx(float(arrays["attributes"][0, 0]), abs=1e-5)


def _library(files, arrays, targets: dict[str, float]):
    from e4ecli.edits.ops import styleflow_edit
    from e4ecli.hub.styleflow import load_flow

    flow = load_flow(files / "flow.pt")
    source = torch.from_numpy(np.concatenate([arrays["lighting"], arrays["attributes"]], axis=1))
    target = source.clone()
    for name, value in targets.items():
        target[:, 9 + NAMES.index(name)] = value
    with torch.no_grad():
        return styleflow_edit(torch.from_numpy(arrays["wplus"]), source, target, flow=flow).numpy()


def test_several_styleflow_edits_compose_into_one_round_trip(files, styleflow_case, tmp_path):
    _, arrays = styleflow_case
    out = tmp_path / "both"
    r = edit(files, out, "-d", "styleflow:age", "-s", "0.8", "-d", "styleflow:gender", "-s", "-0.6", "--latents-only")
    assert r.exit_code == 0, r.output
    got = np.stack([np.load(out / f"f{i}.npy") for i in range(2)])
    both = _library(files, arrays, {"age": 0.8, "gender": -0.6})
    assert np.abs(got - both).max() <= TOL
    assert np.abs(both - arrays["w_edit0"]).max() > 50 * TOL  # gender changed too, not just age


def test_styleflow_sweep_writes_one_frame_per_value(files, styleflow_case, tmp_path):
    _, arrays = styleflow_case
    out = tmp_path / "sweep"
    r = edit(files, out, "-d", "styleflow:age", "-s", "0:1:3", "--save-latents")
    assert r.exit_code == 0, r.output
    for k, value in enumerate((0.0, 0.5, 1.0)):
        frames = sorted((out / "f0").glob(f"{k:02d}_s*.npy"))
        assert len(frames) == 1
        expected = _library(files, arrays, {"age": value})[0]
        assert np.abs(np.load(frames[0]) - expected).max() <= TOL
    assert (out / "f0.png").is_file()  # the labelled strip


def test_attribute_override_wins_and_is_recorded(files, styleflow_case, tmp_path):
    _, arrays = styleflow_case
    out = tmp_path / "override"
    r = edit(files, out, "-d", "styleflow:expression", "-s", "1", "--attribute", "age=0.8", "--latents-only")
    assert r.exit_code == 0, r.output
    rec = manifest(out)[0]["styleflow"]
    assert rec["overridden"] == ["age"] and rec["attributes"]["age"] == 0.8
    from e4ecli.edits.ops import styleflow_edit
    from e4ecli.hub.styleflow import load_flow

    source = torch.from_numpy(np.concatenate([arrays["lighting"], arrays["attributes"]], axis=1))
    source[:, 9 + NAMES.index("age")] = 0.8  # the override changes the source condition ...
    target = source.clone()
    target[:, 9 + NAMES.index("expression")] = 1.0
    with torch.no_grad():
        expected = styleflow_edit(torch.from_numpy(arrays["wplus"]), source, target, flow=load_flow(files / "flow.pt")).numpy()
    got = np.stack([np.load(out / f"f{i}.npy") for i in range(2)])
    assert np.abs(got - expected).max() <= TOL
    assert np.abs(got - arrays["w_edit2"]).max() > 3 * TOL  # ... so the result is not the kit's w_edit2 (age from the file)


def test_latents_without_18_styles_get_a_clear_error(files, tmp_path, g64_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 512), np.float32))
    r = run_cli(["edit", tmp_path / "x.npy", "-o", tmp_path / "o", "-c", g64_path, "-d", "styleflow:age", "-s", "30"])
    assert r.exit_code == 2
    assert "StyleFlow edits W+ latents of 18 styles" in r.output


def test_bad_names_overrides_and_weights_are_refused(files, tmp_path):
    r = edit(files, tmp_path / "a", "-d", "styleflow:height", "-s", "1")
    assert r.exit_code == 2 and "styleflow:height: unknown" in r.output
    r = edit(files, tmp_path / "b", "-d", "styleflow:age", "-s", "1", "--attribute", "height=3")
    assert r.exit_code == 2 and "--attribute 'height=3'" in r.output
    bad = tmp_path / "bad_flow.pt"
    sd = torch.load(files / "flow.pt", weights_only=True)
    sd["chain.0.weight"] = torch.zeros(256)
    torch.save(sd, bad)
    r = run_cli(["edit", files / "in", "-o", tmp_path / "c", "-c", files / "g1024.pt", "--styleflow-weights", bad, "-d", "styleflow:age", "-s", "1"])
    assert r.exit_code == 2 and str(bad) in r.output.replace("\n", "") and "chain.0.weight" in r.output


def test_bad_attributes_file_fails_that_latent_only(files, tmp_path):
    import shutil

    shutil.copytree(files / "in", tmp_path / "in")
    (tmp_path / "in" / "f1.attributes.json").write_text('{"attributes": {"age": "old"}}')
    r = run_cli(["edit", tmp_path / "in", "-o", tmp_path / "o", "-c", files / "g1024.pt", "--styleflow-weights", files / "flow.pt",
                 "-d", "styleflow:age", "-s", "0.5", "--latents-only"])
    assert r.exit_code == 1
    assert "attribute 'age' must be a finite number" in r.output
    assert (tmp_path / "o" / "f0.npy").is_file() and not (tmp_path / "o" / "f1.npy").exists()


# -- the estimator, its samples served over HTTP on 127.0.0.1 --------------------------------------
def synthetic_samples(n=1000, seed=0):
    """W codes and conditions that are an exact linear function of them (plus a little noise)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, 512)) * 0.7
    coef = rng.standard_normal((17, 512)) * 0.05
    intercept = rng.standard_normal(17)
    conditions = w @ coef.T + intercept + 0.01 * rng.standard_normal((n, 17))
    return w, conditions, coef, intercept


def test_estimator_recovers_known_attributes():
    from e4ecli.edits.styleflow import fit_estimator

    w, conditions, coef, intercept = synthetic_samples()
    est = fit_estimator(w[:900], conditions[:900])
    truth = w[900:] @ coef.T + intercept
    err = np.abs(est.predict(np.repeat(w[900:, None], 18, axis=1)) - truth)
    spread = truth.std(axis=0)
    assert (err.mean(axis=0) < 0.1 * spread).all(), err.mean(axis=0) / spread


@pytest.fixture
def sample_server(tmp_path):
    w, conditions, coef, intercept = synthetic_samples()
    folder = tmp_path / "served"
    folder.mkdir()
    np.save(folder / "attributes.npy", conditions[:, 9:].reshape(-1, 8, 1).astype(np.float32))
    np.save(folder / "light.npy", conditions[:, :9].reshape(-1, 1, 9, 1, 1).astype(np.float32))
    latents = [np.repeat(x[None, None], 2, axis=1).astype(np.float32) for x in w]  # (1, 2, 512) each
    (folder / "sg2latents.pickle").write_bytes(pickle.dumps({"Latent": latents}, protocol=3))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", coef, intercept
    server.shutdown()


def test_missing_attributes_are_estimated_from_downloaded_samples_and_recorded(files, sample_server, tmp_path, monkeypatch):
    from e4ecli.hub import zoo

    url, coef, intercept = sample_server
    monkeypatch.setenv("E4E_HOME", str(tmp_path / "home"))
    registry = dict(zoo.load_registry())
    for name, file in (("styleflow_attributes", "attributes.npy"), ("styleflow_light", "light.npy"), ("styleflow_latents", "sg2latents.pickle")):
        registry[name] = zoo.Entry(name, registry[name].filename, "data", "ffhq", "test", (f"{url}/{file}",))
    monkeypatch.setattr(zoo, "load_registry", lambda: registry)
    rng = np.random.default_rng(5)
    (tmp_path / "in").mkdir()
    w = (rng.standard_normal(512) * 0.7).astype(np.float32)
    np.save(tmp_path / "in" / "new.npy", np.repeat(w[None], 18, axis=0))
    (tmp_path / "in" / "new.attributes.json").write_text(json.dumps({"attributes": {"age": 0.3}}))
    out = tmp_path / "out"
    r = run_cli(["edit", tmp_path / "in", "-o", out, "-c", files / "g1024.pt", "--styleflow-weights", files / "flow.pt",
                 "-d", "styleflow:light_front", "-s", "0.5", "--latents-only"])
    assert r.exit_code == 0, r.output
    rec = manifest(out)[0]["styleflow"]
    assert rec["estimated"] == [n for n in NAMES if n != "age"] + ["lighting"]
    assert rec["attributes"]["age"] == 0.3
    truth = w.astype(np.float64) @ coef.T + intercept
    got = np.array(rec["lighting"] + [rec["attributes"][n] for n in NAMES])
    estimated = [i for i in range(17) if i != 9 + NAMES.index("age")]
    assert np.abs(got[estimated] - truth[estimated]).max() < 0.1
    assert list((tmp_path / "home" / "styleflow").glob("estimator-*.npz"))  # fitted once, cached


def test_styleflow_video_sweep_and_paste_back(files, tmp_path):
    from PIL import Image

    from editing_kit import KIT, kit_face_quad, need_kit, write_sidecar

    need_kit()
    gif = tmp_path / "age.gif"
    r = run_cli(["video", files / "in" / "f0.npy", "-o", gif, "-c", files / "g1024.pt", "--styleflow-weights", files / "flow.pt",
                 "-d", "styleflow:age", "-s", "0:1", "--frames", "3", "--no-bounce", "--size", "32"])
    assert r.exit_code == 0, r.output
    with Image.open(gif) as im:
        assert im.n_frames == 3
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    write_sidecar(aligned / "f0.json", KIT / "photos" / "face.jpg", kit_face_quad(), 1024)
    out = tmp_path / "pasted"
    r = edit(files, out, "-d", "styleflow:age", "-s", "0.8", "--paste-back", "--aligned", aligned)
    assert r.exit_code == 1, r.output  # f1 has no sidecar: its pasted image cannot be made
    assert "f1.npy: paste-back: no alignment sidecar" in " ".join(r.output.split())
    assert (out / "f0.pasted.png").is_file() and not (out / "f1.pasted.png").exists()


def test_rerun_redoes_outputs_whose_attribute_source_changed(files, tmp_path):
    import shutil

    shutil.copytree(files / "in", tmp_path / "in")
    out = tmp_path / "out"

    def run(*extra):
        r = run_cli(["edit", tmp_path / "in", "-o", out, "-c", files / "g1024.pt", "--styleflow-weights", files / "flow.pt",
                     "-d", "styleflow:age", "-s", "0.5", "--latents-only", *extra])
        assert r.exit_code == 0, r.output
        return {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}

    first = run()
    assert run() == first  # nothing changed: both skipped
    data = json.loads((tmp_path / "in" / "f1.attributes.json").read_text())
    data["attributes"]["beard"] = 0.0
    (tmp_path / "in" / "f1.attributes.json").write_text(json.dumps(data))
    second = run()
    assert second["f0.npy"] == first["f0.npy"] and second["f1.npy"] != first["f1.npy"]
    third = run("--attribute", "age=0.3")  # an override changes every latent's source
    assert third["f0.npy"] != second["f0.npy"] and third["f1.npy"] != second["f1.npy"]
    assert manifest(out)[1]["styleflow"]["attributes"]["beard"] == 0.0


def test_video_is_redone_when_the_attributes_file_changes(files, tmp_path):
    import shutil

    shutil.copy(files / "in" / "f1.npy", tmp_path / "f1.npy")
    shutil.copy(files / "in" / "f1.attributes.json", tmp_path / "f1.attributes.json")
    gif = tmp_path / "age.gif"

    def run():
        r = run_cli(["video", tmp_path / "f1.npy", "-o", gif, "-c", files / "g1024.pt", "--styleflow-weights", files / "flow.pt",
                     "-d", "styleflow:age", "-s", "0:1", "--frames", "2", "--no-bounce", "--size", "16"])
        assert r.exit_code == 0, r.output
        return r.output

    run()
    assert "nothing to do" in run()
    data = json.loads((tmp_path / "f1.attributes.json").read_text())
    data["attributes"]["beard"] = 0.0
    (tmp_path / "f1.attributes.json").write_text(json.dumps(data))
    assert "made differently (styleflow" in " ".join(run().split())
