"""Configs and the command line: validation errors, and a tiny end-to-end run that writes every file."""

from __future__ import annotations

import json

import pytest
import yaml

from unlearn.cli import main
from unlearn.config import config_from_dict, load_config
from unlearn.errors import UnlearnError

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "forget_classes": [4],
    "data": {"name": "digits", "params": {"seed": 0}},
    "model": {"name": "digits_cnn", "params": {"width": 8, "feature_dim": 32}},
    "train": {"epochs": 8, "lr": 0.05, "batch_size": 64},
    "methods": [{"name": "MoRE", "params": {"num_experts": 4}}, {"name": "ESC"}],
    "eval": {"kr_lrs": [0.1, 0.01], "kr_epochs": 2},
}


def test_unknown_config_keys_name_the_key_and_the_valid_ones():
    with pytest.raises(UnlearnError, match=r"unknown config key\(s\) \['trian'\]"):
        config_from_dict({"trian": {}})
    with pytest.raises(UnlearnError, match=r"train.epoch"):
        config_from_dict({"train": {"epoch": 3}})
    with pytest.raises(UnlearnError, match=r"methods\[0\].param"):
        config_from_dict({"methods": [{"name": "MoRE", "param": {}}]})
    with pytest.raises(UnlearnError, match="references"):
        config_from_dict({"references": ["Oracle"]})


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(UnlearnError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0, 1\n")
    with pytest.raises(UnlearnError, match="not valid YAML"):
        load_config(bad)


def test_every_shipped_config_is_valid():
    from pathlib import Path

    from unlearn.runners.llm import load_llm_config

    configs = sorted(Path(__file__).parents[1].glob("configs/*.yaml"))
    assert configs
    for path in configs:
        (load_llm_config if path.stem.startswith("llm_") else load_config)(path)


def test_run_writes_metrics_report_and_plots(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "c")}))
    assert main(["run", str(config), "--quiet"]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["Original", "Retrain", "MoRE", "ESC"]
    more = metrics["methods"]["MoRE"]
    assert len(more["runs"]) == 2 and set(more["runs"][0]["kr"]) == {"0.1", "0.01"}
    assert more["summary"]["D_f"]["mean"] < 5 and metrics["methods"]["Original"]["summary"]["D_f"]["mean"] > 80
    report = (run / "report.md").read_text()
    assert "KR setting: lr = 0.1" in report and "MoRE" in report and "±" in report
    for plot in metrics["plots"]:
        assert (run / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "config.yaml").exists()
    assert main(["report", str(run)]) == 0  # a real metrics.json passes the report's structure check
    # a second run loads the cached Original/Retrain instead of training again
    assert main(["run", str(config), "--quiet", "--seeds", "0", "--no-plots"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    cost = again["methods"]["Original"]["runs"][0]["cost"]
    assert cost["cached"] is True and "load_time_s" in cost
    # ... and still reports what training it cost, not the load time
    assert cost["time_s"] == metrics["methods"]["Original"]["runs"][0]["cost"]["time_s"]


def test_cli_reports_bad_input_as_one_clear_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**TINY, "forget_classes": [12], "output_dir": str(tmp_path / "r")}))
    assert main(["run", str(config), "--quiet"]) == 2
    assert "forget_classes [12] are not class ids" in capsys.readouterr().err


def test_run_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for option in ("--output-dir", "--seeds", "--forget-classes", "--device", "--no-cache", "--no-plots", "--quiet"):
        assert option in text


def test_unusable_device_is_a_clear_error():
    import torch

    from unlearn.runtime import resolve_device

    with pytest.raises(UnlearnError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UnlearnError, match="CUDA is not available"):
            resolve_device("cuda")


def test_compare_resumes_finished_cells_and_recomputes_changed_ones(tmp_path):
    run = tmp_path / "cmp"
    values = {**TINY, "seeds": [0], "output_dir": str(run), "cache_dir": str(tmp_path / "c")}
    values["eval"] = {"kr_lrs": [0.1], "kr_epochs": 1}
    config = tmp_path / "cmp.yaml"
    config.write_text(yaml.safe_dump(values))
    assert main(["compare", str(config), "--quiet"]) == 0
    assert (run / "plots" / "hm_vs_kr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cell_path = run / "cells" / "more" / "seed0.json"
    cell = json.loads(cell_path.read_text())
    cell["record"]["acc"]["D_f"] = 42.0  # a marker: a resumed run must read this cell back, not recompute it
    cell_path.write_text(json.dumps(cell))

    def more_d_f() -> float:
        return json.loads((run / "metrics.json").read_text())["methods"]["MoRE"]["runs"][0]["acc"]["D_f"]

    assert main(["compare", str(config), "--quiet"]) == 0
    assert more_d_f() == 42.0
    assert main(["compare", str(config), "--quiet", "--fresh"]) == 0
    assert more_d_f() < 5
    cell_path.write_text(json.dumps(cell))
    values["methods"][0]["params"] = {"num_experts": 2}  # a changed method spec invalidates its cells
    config.write_text(yaml.safe_dump(values))
    assert main(["compare", str(config), "--quiet"]) == 0
    assert more_d_f() < 5
    cell_path.write_text("{not json")  # a corrupt cell is recomputed, not an error
    assert main(["compare", str(config), "--quiet"]) == 0
    assert json.loads(cell_path.read_text())["record"]["acc"]["D_f"] < 5
