"""A run is named by its config (seg.run_names): each part's option and what differs from
it, recorded by training and read back by the study, which pairs and labels runs so."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from seg.run_names import configuration, part_label


@pytest.mark.parametrize(("node", "label"), [
    ({"name": "transposed", "learnable": True, "init": "bilinear", "channelwise": True},
     "transposed"),
    ({"name": "transposed", "learnable": False}, "transposed_frozen"),
    ({"name": "transposed", "init": "kaiming"}, "transposed_kaiming"),
    ({"name": "transposed", "channelwise": False}, "transposed_full"),
    ({"name": "transposed", "init": "kaiming", "channelwise": False},
     "transposed_full init=kaiming"),  # a tie: the shorter option
    ({"name": "dysample", "groups": 1, "scope": 0.25, "dynamic_scope": True},
     "dysample dynamic_scope=true"),
    ({"name": "resize_conv", "mode": "nearest"}, "resize_conv mode=nearest"),
    ({"name": "carafe_static", "kernel_size": 5}, "carafe_static"),
    ({"name": "bilinear"}, "bilinear"),
])
def test_an_upsampler_is_named_by_its_option_and_what_differs(node: dict, label: str) -> None:
    assert part_label("model/upsampler", node) == label


def test_hydras_choice_names_the_option_where_it_is_known() -> None:
    node = {"name": "transposed", "learnable": True, "init": "kaiming", "channelwise": True}
    assert part_label("model/upsampler", node, "transposed") == "transposed init=kaiming"
    assert part_label("model/upsampler", node, "transposed_kaiming") == "transposed_kaiming"
    # a choice that is no shipped option (a user's own config group file) is not trusted
    assert part_label("model/upsampler", node, "mine") == "transposed_kaiming"


def test_every_part_of_a_composed_config_is_labelled(compose_train) -> None:
    config = OmegaConf.to_container(compose_train("model/upsampler=carafe",
                                                  "model/decoder=fcn8s", "loss=ce",
                                                  "model.decoder.dropout=0.1"), resolve=True)
    assert configuration(config) == {"encoder": "simple", "decoder": "fcn8s dropout=0.1",
                                     "upsampler": "carafe", "loss": "ce"}


def test_a_sweep_over_a_variant_reports_two_configurations(compose_train, tmp_path: Path
                                                           ) -> None:
    """dysample and dysample with dynamic_scope=true are two rows of the study, each
    labelled by what sets it apart, as training recorded it."""
    from seg.engine import load_checkpoint
    from seg.study.runs import load_runs
    from seg.study.stats import summarize
    from seg.training import train

    for number, dynamic in enumerate(("false", "true")):
        cfg = compose_train("model/upsampler=dysample", f"model.upsampler.dynamic_scope={dynamic}",
                            "callbacks=none")
        run_dir = tmp_path / str(number)
        (run_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as Hydra writes it
        metrics = train(cfg, run_dir)
        expected = "dysample dynamic_scope=true" if dynamic == "true" else "dysample"
        assert metrics["configuration"]["upsampler"] == expected
        checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        assert checkpoint["configuration"] == metrics["configuration"]
    runs, failed = load_runs(tmp_path)
    rows = summarize(runs)
    assert failed == []
    assert [row["upsampler"] for row in rows] == ["dysample", "dysample dynamic_scope=true"]
    assert all(row["seeds"] == 1 for row in rows)


def test_a_run_of_an_earlier_version_is_named_from_its_config(tmp_path: Path) -> None:
    import json

    from seg.study.runs import load_runs

    run_dir = tmp_path / "0"
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"seed": 0, "model": {"decoder": {"name": "fcn8s"}, "upsampler": {
        "name": "resize_conv", "mode": "nearest"}}, "trainer": {"max_iters": 10}}
    OmegaConf.save(OmegaConf.create(config), run_dir / ".hydra" / "config.yaml")
    (run_dir / "metrics.json").write_text(json.dumps({"mIoU": 0.5, "boundary_f": 0.4}))
    (run,), _ = load_runs(tmp_path)
    assert (run["decoder"], run["upsampler"]) == ("fcn8s", "resize_conv mode=nearest")


def test_a_label_that_is_not_a_name_is_refused(tmp_path: Path) -> None:
    import json

    from seg.errors import BadValue
    from seg.study.runs import load_runs

    run_dir = tmp_path / "0"
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"seed": 0, "model": {"decoder": {"name": "fcn8s"}, "upsampler": {
        "name": "bilinear"}}, "trainer": {"max_iters": 10}}
    OmegaConf.save(OmegaConf.create(config), run_dir / ".hydra" / "config.yaml")
    (run_dir / "metrics.json").write_text(json.dumps({
        "mIoU": 0.5, "boundary_f": 0.4, "configuration": {"upsampler": "../x\u001b[2J"}}))
    with pytest.raises(BadValue, match=r"metrics.json: configuration.upsampler must be"):
        load_runs(tmp_path)
