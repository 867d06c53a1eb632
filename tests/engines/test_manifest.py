"""The bundle as a trust boundary: every file the runtime opens lies inside the bundle and is the
file that was hashed; the manifest's own config is fingerprinted and checked against the graphs;
a malformed manifest is a one-line error naming the file and the field."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from vp.engines.manifest import Manifest
from vp.runtime.bundle import Bundle
from vp.runtime.cli import main
from vp.runtime.pipeline import Pipeline
from vp.runtime.sampling import SamplingConfig


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


def rewrite(bundle, edit):
    """Edit the manifest as someone who rewrites it whole would (its own digest recomputed)."""
    manifest = Manifest.read(bundle)
    edit(manifest)
    manifest.write(bundle)


def edit_json(bundle, edit):
    """Edit manifest.json's text by hand (its own digest left as it was)."""
    path = bundle / "manifest.json"
    body = json.loads(path.read_text())
    body = edit(body) or body
    path.write_text(json.dumps(body))


def set_onnx(name):
    def edit(manifest):
        manifest.components["text_encoder"] = manifest.components["text_encoder"].__class__(
            **{**manifest.components["text_encoder"].__dict__, "onnx": name})
    return edit


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/hostname", "../../x/../../etc/hostname"])
def test_a_path_out_of_the_bundle_is_refused(bundle, name):
    rewrite(bundle, set_onnx(name))
    with pytest.raises(ValueError, match=r"components.text_encoder.onnx .* leaves the bundle folder"):
        Bundle.open(bundle)
    with Pipeline.load(bundle, backend="ort", verify=False) as p:  # the backend checks it too
        with pytest.raises(ValueError, match="leaves the bundle folder"):
            p.session("text_encoder")


def test_a_symlink_out_of_the_bundle_is_refused(bundle, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(bundle / "onnx" / "text_encoder.onnx", outside)
    (bundle / "onnx" / "linked.onnx").symlink_to(outside)
    rewrite(bundle, set_onnx("linked.onnx"))
    with pytest.raises(ValueError, match="leaves the bundle folder"):
        Bundle.open(bundle)


def test_the_tokenizer_is_fingerprinted(bundle):
    body = json.loads((bundle / "tokenizer.json").read_text())
    vocab = body["model"]["vocab"]
    vocab["fox"], vocab["dog"] = vocab["dog"], vocab["fox"]  # two ids swapped: every prompt changes meaning
    (bundle / "tokenizer.json").write_text(json.dumps(body))
    with pytest.raises(ValueError, match="tokenizer.json was changed after export"):
        Bundle.open(bundle)


def test_an_edited_config_is_refused(bundle):
    def edit(body):
        body["preset"]["llm"]["d_model"] = 256
    edit_json(bundle, edit)
    with pytest.raises(ValueError, match=r"manifest.json was edited after export \(its config digest differs"):
        Bundle.open(bundle)


def test_a_config_that_disagrees_with_its_graphs_is_refused(bundle):
    rewrite(bundle, lambda m: m.preset["llm"].update(d_model=256))
    with pytest.raises(ValueError, match=r"preset.llm.d_model is 256, but the graphs were exported for 128"):
        Bundle.open(bundle)


def test_a_graph_that_is_not_its_contract_is_refused(bundle):
    """The text encoder's file replaced by the video decoder's, fingerprint and all."""
    def swap(manifest):
        text, video = manifest.components["text_encoder"], manifest.components["video_decoder"]
        manifest.components["text_encoder"] = text.__class__(**{**text.__dict__, "onnx": video.onnx,
                                                                 "sha256": video.sha256})
    rewrite(bundle, swap)
    with Pipeline.load(bundle, backend="ort") as p:
        with pytest.raises(ValueError, match=r"video_decoder.onnx does not match its contract in manifest.json: "
                                             r"input 'text_ids' is missing in the graph"):
            p.generate(task="t2i", prompt="a fox")


def test_ids_outside_the_text_encoders_vocabulary_are_refused(bundle):
    rewrite(bundle, lambda m: m.clip.update(text_vocab=1000))
    with Pipeline.load(bundle, backend="ort") as p:
        with pytest.raises(ValueError, match=r"gave text id \d+, outside the text encoder's vocabulary of 1000"):
            p.generate(task="t2i", prompt="a zebra")


@pytest.mark.parametrize("edit, message", [
    (lambda body: [body], r"expected a JSON object, got a list"),
    (lambda body: {k: v for k, v in body.items() if k != "clip"}, r"missing fields \['clip'\]"),
    (lambda body: {**body, "extra": 1}, r"unknown fields \['extra'\]"),
    (lambda body: {**body, "components": []}, r"field 'components' has the wrong type \(list\)"),
])
def test_a_malformed_manifest_names_the_field(bundle, edit, message):
    edit_json(bundle, edit)
    with pytest.raises(ValueError, match=message):
        Bundle.open(bundle)
    result = CliRunner().invoke(main, ["info", "--bundle", str(bundle)])
    assert result.exit_code == 1 and "manifest.json" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("sampling, message", [
    ({"temperature": 1.0, "top_k": 0, "top_p": 0.9, "cfg_scale": 3.0, "topk": 5},
     r"sampling: unknown keys \['topk'\]"),
    ({"temperature": 1.0, "top_k": 2.5, "top_p": 0.9, "cfg_scale": 3.0}, r"sampling: top_k must be a whole number"),
    ({"temperature": 1.0, "top_k": 0, "top_p": 0.9, "cfg_scale": "3"}, r"sampling: cfg_scale must be a finite"),
    ({"temperature": 1.0, "tasks": {"stylise": {"cfg_scale": 1.0}}}, r"sampling: tasks: unknown task\(s\) \['stylise'\]"),
    ({"temperature": 1.0, "tasks": {"stylize": {"cfg": 1.0}}}, r"sampling: tasks: stylize has unknown keys \['cfg'\]"),
    ({"temperature": 1.0, "tasks": {"stylize": {"top_p": 2}}}, r"sampling: tasks: stylize: top_p must lie in"),
    ({"temperature": 1.0, "tasks": {"stylize": 1.0}}, r"sampling: tasks must map a task to its overrides"),
])
def test_sampling_defaults_may_be_edited_and_are_checked(bundle, sampling, message):
    edit_json(bundle, lambda body: body.update(sampling=sampling))
    with pytest.raises(ValueError, match=message):
        Bundle.open(bundle)


def test_edited_sampling_defaults_are_used(bundle):
    edit_json(bundle, lambda body: body["sampling"].update(temperature=0.0, tasks={"v2a": {"top_k": 4}}))
    sampling = Bundle.open(bundle).sampling
    assert sampling.for_task("t2v") == SamplingConfig(temperature=0.0, top_k=0, top_p=0.9, cfg_scale=3.0)
    assert sampling.for_task("v2a") == SamplingConfig(temperature=0.0, top_k=4, top_p=0.9, cfg_scale=3.0)


def test_a_task_override_applies_to_its_task_and_a_call_overrides_it(bundle):
    edit_json(bundle, lambda body: body["sampling"].update(temperature=1.0, tasks={"t2i": {"temperature": 0.0}}))
    with Pipeline.load(bundle, backend="ort") as p:
        def tokens(task, seed, **kw):
            return p.generate(task=task, prompt="a fox", seed=seed, **kw).tokens

        assert np.array_equal(tokens("t2i", 1), tokens("t2i", 2))  # greedy: the seed does not matter
        assert not np.array_equal(tokens("t2i", 1, temperature=1.0), tokens("t2i", 2, temperature=1.0))
        assert not np.array_equal(tokens("t2v", 1, with_audio=False)[:64], tokens("t2v", 2, with_audio=False)[:64])


def test_a_manifest_without_task_overrides_reads_as_before(bundle):
    edit_json(bundle, lambda body: body["sampling"].pop("tasks"))
    assert Bundle.open(bundle).sampling.tasks == {}


def test_a_pinned_digest(bundle):
    result = CliRunner().invoke(main, ["info", "--bundle", str(bundle), "--sha256"])
    assert result.exit_code == 0, result.output
    digest = result.output.strip()
    assert len(digest) == 64 and int(digest, 16) >= 0
    with Pipeline.load(bundle, backend="ort", expect_digest=digest) as p:
        assert p.generate(task="t2i", prompt="a fox", seed=1).frames.shape == (1, 64, 64, 3)
    edit_json(bundle, lambda body: body["sampling"].update(temperature=0.5))  # allowed, but not what was pinned
    with pytest.raises(ValueError, match=f"has digest [0-9a-f]{{64}}, not the expected {digest}"):
        Pipeline.load(bundle, backend="ort", expect_digest=digest)


def test_the_runtime_opens_the_files_it_hashed(bundle):
    manifest = Manifest.read(bundle)
    for name in manifest.components:
        assert manifest.onnx_path(bundle, name) == (bundle / "onnx" / f"{name}.onnx").resolve()
    assert manifest.tokenizer_path(bundle) == (bundle / "tokenizer.json").resolve()
    assert np.all([len(c.sha256) == 64 for c in manifest.components.values()]) and len(manifest.tokenizer_sha256) == 64
