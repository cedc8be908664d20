"""Bad parameters are refused in one line that names the value, before any compute, with nothing written."""
import pytest

from cascade import cli

BAD = [  # (experiment, -p NAME=VALUE, what the error names)
    ("phenomenon", "finetune_lr=inf", "lr=inf is invalid; allowed: a finite float >= 0"),
    ("phenomenon", "pretrain_lr=1e400", "lr=inf is invalid"),
    ("phenomenon", "weight_decay=nan", "weight_decay=nan is invalid"),
    ("phenomenon", "pretrain_weight_decay=-1", "weight_decay=-1.0 is invalid"),
    ("phenomenon", "width=0", "width=0 is invalid; allowed: an int >= 1"),
    ("phenomenon", "test_size=0", "test_size=0 is invalid"),
    ("phenomenon", "train_size=-5", "train_size=-5 is invalid"),
    ("phenomenon", "first_seed=18446744073709551616", "seed=18446744073709551616 is invalid; allowed: an int in"),
    ("phenomenon", "seeds=0", "seeds=0 is invalid"),
    ("phenomenon", "dataset=cifar10", "dataset='cifar10' is not available here"),
    ("phenomenon", "dataset=mnist", "unknown dataset 'mnist'"),
    ("phenomenon", "model=resnet9", "unknown model 'resnet9'"),
    ("phenomenon", "batch_size=1000", "batch_size=1000 exceeds the training set (train_size=256)"),
    ("conditions", "batch_sizes=1000", "batch_size=1000 exceeds the training set (train_size=256)"),
    ("phenomenon", "fractions=1.5", "fractions=(1.5,) is invalid"),
    ("phenomenon", "finetune_epochs=-1", "epochs=-1 is invalid"),
    ("phenomenon", "nope=1", "unknown parameter 'nope' for phenomenon"),
]


@pytest.fixture
def empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CASCADE_READ_ONLY", raising=False)
    return tmp_path


@pytest.mark.parametrize("experiment, param, message", BAD)
def test_a_bad_parameter_is_one_line_before_anything_is_written(experiment, param, message, empty_store, capsys):
    if "cifar10" in param:
        from cascade import data

        if data.available("cifar10"):
            pytest.skip("CIFAR-10 is installed here")
    assert cli.main(["run", experiment, "--profile", "smoke", "-p", param]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not any(empty_store.iterdir())  # no record, no checkpoint, not even a folder
