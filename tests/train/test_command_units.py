"""``pyinstance train`` over fake trainers (no network): the overrides it hands to the config,
resuming, the summary (JSON and table), the skipped files and a diverged run's error."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import pyinstance.train
import pyinstance.train.verification
from pyinstance.cli import main
from pyinstance.commands.train import _cell
from pyinstance.train import TrainingDiverged
from pyinstance.train.trainer import TrainResult
from pyinstance.train.verification import VerificationResult


def write_config(tmp_path: Path, **train) -> Path:
    lines = [f'output = "{tmp_path / "run"}"', "[data]", 'source = "pics"', "[train]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in train.items()]
    lines += ["[verification]", 'index = "idx"']
    path = tmp_path / "c.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


EPOCHS = [
    {"epoch": 1, "loss": 0.123456, "active_triplets": 3.0, "seconds": 1.0},
    {"epoch": 2, "loss": 0.5, "p_at_1": 0.75, "seconds": 2.25},
]


class FakeTrainer:
    made: list[FakeTrainer] = []
    resumes = True
    error: Exception | None = None

    def __init__(self, config, *, context):
        self.config, self.context = config, context
        self.data = FakeData()
        self.step, self.epoch, self.resumed = 6, 2, False
        FakeTrainer.made.append(self)

    def resume(self):
        self.resumed = True
        return FakeTrainer.resumes

    def fit(self):
        if FakeTrainer.error is not None:
            raise FakeTrainer.error
        return TrainResult(Path("/out/model.pt"), 8, EPOCHS, seconds=12.345, skipped=1)


class FakeData:
    skipped = (SimpleNamespace(path="bad.jpg", reason="broken"),)
    num_classes = 4

    def __len__(self):
        return 9


@pytest.fixture
def fake(monkeypatch):
    FakeTrainer.made, FakeTrainer.resumes, FakeTrainer.error = [], True, None
    monkeypatch.setattr(pyinstance.train, "Trainer", FakeTrainer)
    return FakeTrainer


def test_overrides_reach_the_config(tmp_path, fake, capsys):
    path = write_config(tmp_path, epochs=2)
    assert main(["train", str(path), "--json"]) == 0
    config = fake.made[-1].config
    assert (config.train.epochs, config.train.max_steps, config.train.progress) == (2, None, True)
    assert config.output == tmp_path / "run"
    out = tmp_path / "elsewhere"
    arguments = ["--epochs", "7", "--max-steps", "3", "--output", str(out), "--no-progress"]
    assert main(["train", str(path), "--json", *arguments]) == 0
    config = fake.made[-1].config
    assert (config.train.epochs, config.train.max_steps, config.train.progress) == (7, 3, False)
    assert config.output == out
    assert fake.made[-1].context.is_main


def test_the_json_summary(tmp_path, fake, capsys):
    assert main(["train", str(write_config(tmp_path)), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out[captured.out.index("{") :])
    assert summary == {
        "model": "/out/model.pt",
        "steps": 8,
        "seconds": 12.3,
        "images": 9,
        "instances": 4,
        "skipped": 1,
        "epochs": EPOCHS,
    }
    assert captured.out.endswith("\n" + json.dumps(summary, indent=2) + "\n")  # indented by 2
    assert captured.err == "pyinstance train: skipped bad.jpg: broken\n"
    assert captured.out.startswith("resumed at step 6 (epoch 3)\n")


def test_restart_does_not_resume(tmp_path, fake, capsys):
    assert main(["train", str(write_config(tmp_path)), "--json", "--restart"]) == 0
    assert not fake.made[-1].resumed
    assert capsys.readouterr().out.startswith("{")
    fake.resumes = False
    assert main(["train", str(write_config(tmp_path)), "--json"]) == 0
    assert fake.made[-1].resumed
    assert capsys.readouterr().out.startswith("{")


def test_the_table_summary(tmp_path, fake, capsys):
    fake.resumes = False
    assert main(["train", str(write_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert f"training{tmp_path / 'run'}" in "".join(out.split())  # the title may wrap
    lines = [line for line in out.splitlines() if "│" in line or "┃" in line]
    cells = [[c.strip() for c in line.strip("│┃ ").replace("┃", "│").split("│")] for line in lines]
    assert cells == [
        ["epoch", "loss", "active_triplets", "p_at_1", "seconds"],
        ["1", "0.1235", "3.0000", "-", "1.0000"],
        ["2", "0.5000", "-", "0.7500", "2.2500"],
    ]
    assert (
        "9 images of 4 instances, 1 skipped; 8 steps in 12 s; model written to /out/model.pt"
        in " ".join(out.split())
    )


def test_a_diverged_run_is_an_error_exit(tmp_path, fake, capsys):
    fake.error = TrainingDiverged("loss is nan at step 3")
    assert main(["train", str(write_config(tmp_path))]) == 1
    assert "pyinstance train: error: loss is nan at step 3\n" in capsys.readouterr().err


def test_cells_format_floats_to_four_places():
    assert [_cell(None), _cell(0.5), _cell(3), _cell("x")] == ["-", "0.5000", "3", "x"]


class FakeVerificationTrainer:
    made: list = []

    def __init__(self, config):
        self.config = config
        self.data = FakeData()
        self.index = SimpleNamespace(closed=False)
        self.index.close = lambda: setattr(self.index, "closed", True)
        FakeVerificationTrainer.made.append(self)

    def fit(self):
        rows = [{"epoch": 1, "loss": 0.25, "train_top1": 0.5, "val_auroc": 0.875}]
        return VerificationResult(Path("/out/verifier.pt"), rows, 10.06, 4.44, 40)


def test_the_verification_objective_trains_the_re_ranker(tmp_path, monkeypatch, capsys):
    FakeVerificationTrainer.made = []
    monkeypatch.setattr(
        pyinstance.train.verification, "VerificationTrainer", FakeVerificationTrainer
    )
    path = write_config(tmp_path, objective="verification")
    assert main(["train", str(path), "--json", "--epochs", "2"]) == 0
    trainer = FakeVerificationTrainer.made[-1]
    assert trainer.config.train.epochs == 2 and trainer.index.closed
    assert json.loads(capsys.readouterr().out) == {
        "model": "/out/verifier.pt",
        "pairs": 40,
        "seconds": 10.1,
        "describe_seconds": 4.4,
        "images": 9,
        "instances": 4,
        "epochs": [{"epoch": 1, "loss": 0.25, "train_top1": 0.5, "val_auroc": 0.875}],
    }
    assert main(["train", str(path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "│" in line or "┃" in line]
    cells = [[c.strip() for c in line.strip("│┃ ").replace("┃", "│").split("│")] for line in lines]
    assert cells == [
        ["epoch", "loss", "train_top1", "val_top1", "val_raw_top1", "val_auroc", "val_raw_auroc"],
        ["1", "0.2500", "0.5000", "-", "-", "0.8750", "-"],
    ]
    assert (
        "40 pairs from 9 photos; 10 s (4 s describing views); re-ranker written to "
        "/out/verifier.pt (use: --rerank /out/verifier.pt)" in " ".join(out.split())
    )
    assert f"verificationtraining{tmp_path / 'run'}" in "".join(out.split())


def test_max_steps_is_refused_for_the_verification_objective(tmp_path, capsys):
    path = write_config(tmp_path, objective="verification")
    assert main(["train", str(path), "--max-steps", "2"]) != 0
    assert "--max-steps: not for objective 'verification'" in capsys.readouterr().err


class OtherRank:
    """A rank other than the main one (what process_context gives rank 1 under torchrun)."""

    is_main = False

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_other_ranks_train_silently_and_succeed(tmp_path, fake, monkeypatch, capsys):
    import pyinstance.train.distributed

    devices = []
    monkeypatch.setattr(
        pyinstance.train.distributed,
        "process_context",
        lambda device: devices.append(device) or OtherRank(device),
    )
    assert main(["train", str(write_config(tmp_path, device="cpu")), "--json"]) == 0
    assert devices == ["cpu"] and fake.made[-1].resumed
    assert capsys.readouterr() == ("", "")  # no skipped files, no resume line, no summary


def test_the_index_is_closed_when_verification_training_fails(tmp_path, monkeypatch):
    class Failing(FakeVerificationTrainer):
        def fit(self):
            raise RuntimeError("boom")

    FakeVerificationTrainer.made = []
    monkeypatch.setattr(pyinstance.train.verification, "VerificationTrainer", Failing)
    with pytest.raises(RuntimeError, match="boom"):
        main(["train", str(write_config(tmp_path, objective="verification"))])
    assert FakeVerificationTrainer.made[-1].index.closed


def test_every_option_is_documented_in_the_help():
    from pyinstance.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0]
    train = commands.choices["train"]
    helps = {action.dest: action.help for action in train._actions if action.dest != "help"}
    assert helps == {
        "config": "the training configuration (TOML, see configs/)",
        "epochs": "override train.epochs",
        "max_steps": "stop after this many steps (override)",
        "output": "override the output folder",
        "restart": "ignore a checkpoint in the output folder",
        "no_progress": "no progress bars",
        "json": "print the result as JSON",
    }
    (train_help,) = [a.help for a in commands._choices_actions if a.dest == "train"]
    assert train_help == (
        "fine-tune a descriptor (TOML config); writes a model for index build --model"
    )


def test_the_verification_json_is_indented_by_two_and_tables_are_right_aligned(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(
        pyinstance.train.verification, "VerificationTrainer", FakeVerificationTrainer
    )
    path = write_config(tmp_path, objective="verification")
    assert main(["train", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(json.loads(out), indent=2) + "\n"
    assert main(["train", str(path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "│" in line]
    cells = rows[-1].strip().strip("│").split("│")
    # epoch "1" under a 5-wide "epoch" header, "0.2500" under "loss": padded on the left
    assert cells[0] == "     1 " and cells[1].endswith(" 0.2500 ")
