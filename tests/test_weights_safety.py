"""Encoder weights are data and never come from a network (docs/RELIABILITY.md): every
encoder takes its weights through one loader (seg.models.encoders.load_encoder_weights,
which reads the encoder entry's pretrained record and the file alone), which refuses in
one line naming the file whatever is not a plain state dict of tensors that fits it, and
``weights=imagenet`` reads only the caches on disk, whatever a hub or an ``HF_ENDPOINT``
would serve."""

from __future__ import annotations

import http.server
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from seg.errors import BadValue, MissingPath, PathExists, UserError
from seg.models import build_encoder
from seg.models.encoders import VGG16Encoder, load_encoder_weights, pretrained_of

timm = pytest.importorskip("timm")  # the dev extra has it; seg itself does not need it

SMALL = "test_efficientnet"  # timm's own 82,000-parameter test model
SMALL_REPO = "models--timm--test_efficientnet.r160_in1k"  # its default tag's hub repo
BIN = Path(sys.executable).parent
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


class WritesAMarker:
    """A pickle that runs code when loaded: it creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


# -- no network, ever ------------------------------------------------------------------------


@pytest.fixture
def stand_in_hub() -> Iterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1 that records every request (and has nothing: 404)."""
    seen: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen.append(f"{self.command} {self.path}")
            self.send_error(404)

        do_GET = do_HEAD = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def online_environment(tmp_path: Path, endpoint: str) -> dict[str, str]:
    """An environment that asks for the network: hub switched on, pointing at ``endpoint``,
    with empty caches."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    return {**environment, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
            "TORCH_HOME": str(tmp_path / "torch")}


def test_seg_train_asks_no_hub_and_names_where_the_weights_go(
        shapes_root: Path, tmp_path: Path, stand_in_hub: tuple[str, list[str]]) -> None:
    endpoint, seen = stand_in_hub
    start = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "seg-train"), "debug=tiny", f"dataset.root={shapes_root}",
         f"hydra.run.dir={tmp_path / 'run'}", "model/encoder=timm",
         f"model.encoder.model_name={SMALL}", "model.encoder.weights=imagenet"],
        env=online_environment(tmp_path, endpoint), capture_output=True, text=True,
        timeout=300, check=False)
    seconds = time.perf_counter() - start
    assert seen == []
    assert done.returncode == 1, done.stderr
    expected = tmp_path / "hf" / "hub" / SMALL_REPO / "snapshots" / "main" / "model.safetensors"
    assert done.stderr.startswith("error: timm's test_efficientnet weights are not cached")
    assert (f"download https://huggingface.co/timm/test_efficientnet.r160_in1k/resolve/main/"
            f"model.safetensors to {expected},") in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert seconds < 60  # start-up only: no retries (they took 40-50 s)


IMPORTED_FIRST = """
import sys
import huggingface_hub.constants
assert not huggingface_hub.constants.HF_HUB_OFFLINE  # it read HF_HUB_OFFLINE=0 already
from seg.errors import MissingPath
from seg.models import build_encoder
try:
    build_encoder("timm", weights="imagenet", model_name=sys.argv[1])
except MissingPath as error:
    print(error)
    sys.exit(3)
"""


def test_no_request_even_when_huggingface_hub_was_imported_before_seg(
        tmp_path: Path, stand_in_hub: tuple[str, list[str]]) -> None:
    endpoint, seen = stand_in_hub
    done = subprocess.run([sys.executable, "-c", IMPORTED_FIRST, f"{SMALL}.r160_in1k"],
                          env=online_environment(tmp_path, endpoint), capture_output=True,
                          text=True, timeout=300, check=False)
    assert seen == []
    assert done.returncode == 3, done.stderr
    assert str(tmp_path / "hf" / "hub" / SMALL_REPO / "snapshots") in done.stdout


SWITCHES = """
import os, sys
if sys.argv[1] == "first":
    import huggingface_hub.constants
import seg
import huggingface_hub.constants
print(os.environ["HF_HUB_OFFLINE"], os.environ["TRANSFORMERS_OFFLINE"],
      os.environ["HF_DATASETS_OFFLINE"], huggingface_hub.constants.HF_HUB_OFFLINE)
"""


@pytest.mark.parametrize("order", ["first", "after"])
def test_importing_seg_turns_the_hubs_off_whatever_the_user_set(tmp_path: Path,
                                                                 order: str) -> None:
    done = subprocess.run([sys.executable, "-c", SWITCHES, order],
                          env=online_environment(tmp_path, "http://127.0.0.1:9"),
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["1", "1", "1", "True"]


def put_in_hf_cache(root: Path, filename: str, state: dict[str, torch.Tensor],
                    revision: str | None) -> None:
    """``state`` as ``filename`` of the small model's repo, in the hub cache's layout: under
    a commit named by ``refs/main``, or (``revision`` None) in ``snapshots/main`` by hand."""
    repo = root / "hub" / SMALL_REPO
    snapshot = repo / "snapshots" / (revision or "main")
    snapshot.mkdir(parents=True)
    if filename.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, snapshot / filename)
    else:
        torch.save(state, snapshot / filename)
    if revision:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(revision)


@pytest.mark.parametrize(("model_name", "filename", "revision"), [
    (SMALL, "model.safetensors", "0123abcd"),
    (f"{SMALL}.r160_in1k", "model.safetensors", None),
    (SMALL, "pytorch_model.bin", None),
])
def test_timm_imagenet_weights_are_read_from_the_hf_cache_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_name: str, filename: str,
        revision: str | None) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    classifier = timm.create_model(SMALL)  # random weights stand in for the published ones
    put_in_hf_cache(tmp_path / "hf", filename, classifier.state_dict(), revision)
    encoder = build_encoder("timm", weights="imagenet", model_name=model_name)
    published = classifier.state_dict()
    for key, value in encoder.body.state_dict().items():
        assert torch.equal(value, published[key]), key


def test_a_tagged_timm_name_is_taken_when_timm_has_that_tag() -> None:
    tagged = build_encoder("timm", model_name=f"{SMALL}.r160_in1k")
    assert tagged.channels == build_encoder("timm", model_name=SMALL).channels
    with pytest.raises(BadValue, match="timm has no weights tagged 'nope' for "
                                       "test_efficientnet"):
        build_encoder("timm", model_name=f"{SMALL}.nope")
    with pytest.raises(BadValue, match="is not a timm model"):
        build_encoder("timm", model_name="os.system")


def test_torchvision_imagenet_weights_are_read_from_the_torch_hub_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    published = torchvision.models.resnet18().state_dict()
    # torchvision's own files predate num_batches_tracked
    torch.save({k: v for k, v in published.items() if not k.endswith("num_batches_tracked")},
               tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    encoder = build_encoder("resnet18", weights="imagenet")
    assert torch.equal(encoder.stem[0].weight, published["conv1.weight"])
    assert torch.equal(encoder.layer4[1].bn2.running_var, published["layer4.1.bn2.running_var"])


# -- one loader, every encoder: a bad file is one line naming it -----------------------------


def safetensors_bytes(header: object, data: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode()
    return len(encoded).to_bytes(8, "little") + encoded + data


def saved(value: object) -> Callable[[Path, dict], bytes]:
    def content(tmp: Path, own: dict) -> bytes:
        path = tmp / "saved.pt"
        torch.save(value(tmp, own) if callable(value) else value, path)
        return path.read_bytes()

    return content


def real_safetensors(tmp: Path, own: dict) -> bytes:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in own.items()}, tmp / "saved.safetensors")
    return (tmp / "saved.safetensors").read_bytes()


def without_first(own: dict) -> dict:
    return dict(list(own.items())[1:])


def first_reshaped(own: dict) -> dict:
    key = next(iter(own))
    return {**own, key: torch.zeros(1)}


F32_4 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
# kind: (file name, its content from (tmp, the encoder's state dict), what the line says)
MALFORMED: dict[str, tuple[str, Callable[[Path, dict], bytes], str]] = {
    "a pickle that runs code": (
        "w.pth", lambda tmp, own: pickle.dumps(WritesAMarker(tmp / "pwned")),
        "is not a plain state dict of tensors (it would run code or holds objects"),
    "a state dict holding such a pickle": (
        "w.pth", saved(lambda tmp, own: {**own, "x": WritesAMarker(tmp / "pwned")}),
        "is not a plain state dict of tensors (it would run code or holds objects"),
    "a list": ("w.pth", saved(lambda tmp, own: list(own.values())), "holds a list, not a "
               "state dict"),
    "{}": ("w.pth", saved({}), "holds no tensors"),
    "a bare tensor": ("w.pth", saved(torch.zeros(3)), "holds a Tensor, not a state dict"),
    "a non-tensor entry": ("w.pth", saved(lambda tmp, own: {**own, "step": 5}),
                           "entry 'step' holds a value of type int, not a tensor"),
    "a missing tensor": ("w.pth", saved(lambda tmp, own: without_first(own)),
                         "lacks 1 of the encoder's"),
    "a wrong shape": ("w.pth", saved(lambda tmp, own: first_reshaped(own)),
                      "has shape (1,), the encoder's"),
    "an empty file": ("w.pth", lambda tmp, own: b"", "cannot be read (the file is empty)"),
    "a truncated .pth": ("w.pth", lambda tmp, own: saved(own)(tmp, own)[:300],
                         "cannot be read (it is truncated or damaged"),
    "text": ("w.pth", lambda tmp, own: b"not weights at all\n",
             "is not a plain state dict of tensors"),
    "safetensors under 8 bytes": ("w.safetensors", lambda tmp, own: b"abc",
                                  "fewer than its 8-byte header length"),
    "safetensors header longer than the file": (
        "w.safetensors", lambda tmp, own: (10**9).to_bytes(8, "little") + b"{}",
        "its header claims 1000000000 bytes"),
    "safetensors header not JSON": (
        "w.safetensors", lambda tmp, own: (8).to_bytes(8, "little") + b"not json",
        "its header is not JSON"),
    "safetensors header a list": ("w.safetensors", lambda tmp, own: safetensors_bytes([]),
                                  "its header is not a JSON object"),
    "safetensors offsets past the end": (
        "w.safetensors", lambda tmp, own: safetensors_bytes({"a": F32_4}, b"\0" * 4),
        "its data ends at byte 16, past the 4"),
    "safetensors shape and offsets disagree": (
        "w.safetensors", lambda tmp, own: safetensors_bytes(
            {"a": {**F32_4, "shape": [2]}}, b"\0" * 16), "16 bytes for a F32 tensor"),
    "safetensors of an unknown dtype": (
        "w.safetensors", lambda tmp, own: safetensors_bytes(
            {"a": {**F32_4, "dtype": "Q7"}}, b"\0" * 16), "no dtype safetensors knows"),
    "safetensors cut short": ("w.safetensors",
                              lambda tmp, own: real_safetensors(tmp, own)[:-100],
                              "not a valid safetensors file"),
    "safetensors of no tensors": ("w.safetensors", lambda tmp, own: safetensors_bytes({}),
                                  "holds no tensors"),
}
ENCODERS_UNDER_TEST = {"simple": {}, "resnet18": {}, "timm": {"model_name": SMALL}}


@pytest.fixture(scope="module")
def encoders() -> dict[str, torch.nn.Module]:
    return {name: build_encoder(name, **options)
            for name, options in ENCODERS_UNDER_TEST.items()}


def assert_one_line_naming(error: BaseException, path: Path, says: str) -> None:
    message = str(error)
    assert isinstance(error, UserError)
    assert "\n" not in message and str(path) in message and says in message, message
    assert "weights_only=False" not in message and "weights_only" not in message


@pytest.mark.parametrize("name", list(ENCODERS_UNDER_TEST))
@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_weights_file_is_one_line_naming_it(
        tmp_path: Path, encoders: dict, name: str, kind: str) -> None:
    filename, content, says = MALFORMED[kind]
    encoder = encoders[name]
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    path = tmp_path / filename
    path.write_bytes(content(tmp_path, before))
    with pytest.raises(UserError) as error:
        load_encoder_weights(encoder, path, pretrained_of(name, ENCODERS_UNDER_TEST[name]))
    assert_one_line_naming(error.value, path, says)
    assert not (tmp_path / "pwned").exists()
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())


@pytest.mark.parametrize("name", list(ENCODERS_UNDER_TEST))
@pytest.mark.parametrize(("kind", "says"), [
    ("fifo", "is not a regular file"), ("folder", "is a folder, not a file"),
    ("device", "is not a regular file"), ("missing", "not found"),
])
def test_a_weights_path_that_is_no_file_is_one_line_and_never_blocks(
        tmp_path: Path, encoders: dict, name: str, kind: str, says: str) -> None:
    path = tmp_path / "w.pth"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "device":
        path.symlink_to("/dev/zero")
    with pytest.raises(UserError) as error:
        load_encoder_weights(encoders[name], path, pretrained_of(name, ENCODERS_UNDER_TEST[name]))
    assert_one_line_naming(error.value, path, says)


def test_a_file_of_another_encoder_is_one_line_for_simple(tmp_path: Path) -> None:
    torch.save(build_encoder("resnet18").state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(BadValue, match=r"resnet18.pth lacks \d+ of the encoder's \d+ tensors "
                                       r"\(first: stem.0.0.weight\)"):
        build_encoder("simple", weights=str(tmp_path / "resnet18.pth"))
    # a tensor the encoder has no place for: named, never dropped in silence
    state = {**build_encoder("simple").state_dict(), "fc.weight": torch.zeros(2)}
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(BadValue, match="extra.pth holds fc.weight, which this encoder has no "
                                       "place for"):
        build_encoder("simple", weights=str(tmp_path / "extra.pth"))


def test_every_encoder_loads_its_own_and_its_publishers_layout(tmp_path: Path) -> None:
    import torchvision

    # the encoder's own state dict (seg-pretrain's encoder.pth), as .pth and .safetensors
    from safetensors.torch import save_file

    simple = build_encoder("simple")
    torch.save({"state_dict": simple.state_dict()}, tmp_path / "simple.pt")
    save_file(simple.state_dict(), tmp_path / "simple.safetensors")
    for path in ("simple.pt", "simple.safetensors"):
        loaded = build_encoder("simple", weights=str(tmp_path / path))
        assert torch.equal(loaded.stage32[0].body[0][0].weight,
                           simple.stage32[0].body[0][0].weight)
    # torchvision's VGG-16 layout, fc6/fc7 reshaped into convolutions
    vgg = VGG16Encoder(fc_channels=16)
    published = {f"features.{key.split('.', 1)[1]}": torch.randn_like(value)
                 for key, value in vgg.state_dict().items() if key.startswith("to_pool")}
    published.update({"classifier.0.weight": torch.randn(16, 512 * 7 * 7),
                      "classifier.0.bias": torch.randn(16),
                      "classifier.3.weight": torch.randn(16, 16),
                      "classifier.3.bias": torch.randn(16),
                      "classifier.6.weight": torch.randn(1000, 16)})
    torch.save(published, tmp_path / "vgg.pth")
    loaded = build_encoder("vgg16", fc_channels=16, weights=str(tmp_path / "vgg.pth"))
    assert torch.equal(loaded.to_pool4[0].weight, published["features.17.weight"])
    assert torch.equal(loaded.fc[0].weight.flatten(1), published["classifier.0.weight"])
    # torchvision's ResNet layout, its classifier left out
    resnet = torchvision.models.resnet18().state_dict()
    torch.save(resnet, tmp_path / "resnet.pth")
    loaded = build_encoder("resnet18", weights=str(tmp_path / "resnet.pth"))
    assert torch.equal(loaded.stem[4][0].conv1.weight, resnet["layer1.0.conv1.weight"])


@pytest.mark.parametrize("imagenet", [False, True])
def test_seg_train_with_another_encoders_weights_for_simple_is_one_line(
        shapes_root: Path, tmp_path: Path, imagenet: bool) -> None:
    """``model/encoder=simple`` with a ResNet's file, or with ``weights=imagenet`` (it
    publishes none): one line naming the fix, never a traceback."""
    torch.save(build_encoder("resnet18").state_dict(), tmp_path / "resnet18.pth")
    weights = "imagenet" if imagenet else f"{tmp_path}/resnet18.pth"
    done = subprocess.run(
        [str(BIN / "seg-train"), "debug=tiny", f"dataset.root={shapes_root}",
         f"hydra.run.dir={tmp_path / 'run'}", "model/encoder=simple",
         f"model.encoder.weights={weights}"],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("error: model.encoder.weights=imagenet: the simple encoder "
                                  "publishes no weights: set model.encoder.weights=" if imagenet
                                  else f"error: encoder weights file {tmp_path}/resnet18.pth "
                                  "lacks 95 of the encoder's 114 tensors"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_seg_train_with_a_pickle_that_runs_code_as_weights_is_one_line(
        shapes_root: Path, tmp_path: Path) -> None:
    (tmp_path / "gadget.pth").write_bytes(pickle.dumps(WritesAMarker(tmp_path / "pwned")))
    done = subprocess.run(
        [str(BIN / "seg-train"), "debug=tiny", f"dataset.root={shapes_root}",
         f"hydra.run.dir={tmp_path / 'run'}", f"model.encoder.weights={tmp_path}/gadget.pth"],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: encoder weights file {tmp_path}/gadget.pth is not "
                                  "a plain state dict of tensors")
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "pwned").exists()


# -- scripts/prepare_weights.py ---------------------------------------------------------------


def run_converter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "prepare_weights.py"), *args],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize(("source", "says"), [
    (lambda tmp: pickle.dumps(WritesAMarker(tmp / "pwned")), "is not a plain state dict of "
     "tensors (it would run code or holds objects"),
    (lambda tmp: saved({"a": torch.zeros(1), "step": 5})(tmp, {}),
     "entry 'step' holds a value of type int, not a tensor"),
])
def test_the_converter_reads_its_source_as_data(tmp_path: Path, source: Callable,
                                                says: str) -> None:
    (tmp_path / "source.pth").write_bytes(source(tmp_path))
    done = run_converter("efficientnet-lite0", "--source", str(tmp_path / "source.pth"),
                         "--out", str(tmp_path / "out.pth"))
    assert done.returncode == 1 and says in done.stderr
    assert done.stderr.startswith(f"error: --source {tmp_path}/source.pth")
    assert len(done.stderr.splitlines()) == 1 and not (tmp_path / "pwned").exists()
    assert not (tmp_path / "out.pth").exists()


def test_the_converter_asks_for_overwrite_only_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import prepare_weights

    monkeypatch.setattr(prepare_weights, "check_classes", lambda model: {})
    torch.save(timm.create_model(prepare_weights.TIMM_MODEL).state_dict(),
               tmp_path / "source.pth")
    (tmp_path / "elsewhere.pth").write_bytes(b"kept")
    (tmp_path / "out.pth").symlink_to(tmp_path / "elsewhere.pth")
    with pytest.raises(PathExists, match="exists: pass --overwrite"):
        prepare_weights.efficientnet_lite0(tmp_path / "source.pth", tmp_path / "out.pth",
                                           overwrite=False)
    with pytest.raises(PathExists) as error:
        prepare_weights.efficientnet_lite0(tmp_path / "source.pth", tmp_path / "out.pth",
                                           overwrite=True)
    assert "symbolic link" in str(error.value) and "--overwrite" not in str(error.value)
    assert (tmp_path / "elsewhere.pth").read_bytes() == b"kept"
    written = prepare_weights.efficientnet_lite0(tmp_path / "source.pth",
                                                 tmp_path / "new.pth", overwrite=True)
    assert set(torch.load(written, weights_only=True)) == set(
        timm.create_model(prepare_weights.TIMM_MODEL).state_dict())


def test_a_missing_weights_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(MissingPath, match="missing.pth: set model.encoder.weights"):
        build_encoder("simple", weights=str(tmp_path / "missing.pth"))
