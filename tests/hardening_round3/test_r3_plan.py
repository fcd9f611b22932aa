"""Issue 20, the memory plan (branch `released`): a missing or malformed config, a memory
size it cannot parse, and settings of the wrong type are each an NLAError naming what was
wrong, never a raw exception and never a plan of a model that cannot exist."""

from __future__ import annotations

import inspect
import json

import pytest

from nla_lens.core.plan import parse_bytes, plan
from nla_lens.errors import CheckpointError, DeviceError, NLAError

TINY = {"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 16, "vocab_size": 32}  # fmt: skip


def checkpoint(root, name, config):
    path = root / name
    path.mkdir()
    (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return path


@pytest.mark.parametrize(
    "size",
    ["1e400GB", 10**400, float("inf"), "80G", "-5GB", "1,000GB", "", "GB", "0GB", "nan"],
    ids=["1e400GB", "10**400", "inf", "80G", "-5GB", "1,000GB", "empty", "GB", "0GB", "nan"],
)
def test_a_memory_size_it_cannot_parse(tmp_path, size) -> None:
    with pytest.raises(DeviceError, match="not an amount of memory.*'80GB'"):
        parse_bytes(size)
    with pytest.raises(DeviceError, match="not an amount of memory"):
        plan(checkpoint(tmp_path, "av", TINY), gpu_memory=size)


def test_a_memory_size_it_cannot_parse_at_the_command_line(tmp_path, capsys) -> None:
    from nla_lens.cli import main

    av = checkpoint(tmp_path, "av", TINY)
    assert main(["plan", "--av", str(av), "--gpu-memory", "1e400GB"]) == 2
    assert "not an amount of memory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config",
    [
        "{not json",
        "{}",
        "[]",
        {**TINY, "hidden_size": "big"},
        {**TINY, "num_attention_heads": 0},
        {**TINY, "num_hidden_layers": -1},
        {**TINY, "num_hidden_layers": 0},
        {**TINY, "vocab_size": -5},
    ],
    ids=[
        "not-json",
        "empty",
        "a-list",
        "width-a-string",
        "no-heads",
        "negative-layers",
        "no-layers",
        "negative-vocab",
    ],
)
def test_a_malformed_config_is_refused(tmp_path, config) -> None:
    av = checkpoint(tmp_path, "av", config)
    with pytest.raises(CheckpointError, match=r"av '.*av'"):
        plan(av)


def test_a_missing_config_is_refused(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    for missing in (tmp_path / "nowhere", tmp_path / "empty"):
        with pytest.raises(CheckpointError, match="cannot read its config.json"):
            plan(missing)
    av = checkpoint(tmp_path, "av", TINY)
    with pytest.raises(CheckpointError, match="subject .*cannot read its config.json"):
        plan(av, subject=tmp_path / "nowhere")


@pytest.mark.parametrize(
    "settings",
    [
        {"reserve": "0.1"},
        {"reserve": 1.5},
        {"prompt_tokens": -500},
        {"prompt_tokens": 2.5},
        {"batch": 2.5},
        {"explanation_tokens": "200"},
    ],
    ids=[
        "reserve-str",
        "reserve-over",
        "prompt-negative",
        "prompt-float",
        "batch-float",
        "tokens-str",
    ],
)
def test_plan_settings_of_the_wrong_type_or_range(tmp_path, settings) -> None:
    av = checkpoint(tmp_path, "av", TINY)
    unchecked = inspect.unwrap(plan)  # as a user calls it: no test-time type checker in front
    with pytest.raises(NLAError, match=next(iter(settings))):
        unchecked(av, **settings)


def test_settings_in_the_forms_users_write_are_planned(tmp_path) -> None:
    import numpy as np

    av = checkpoint(tmp_path, "av", TINY)
    unchecked = inspect.unwrap(plan)
    p = unchecked(av, gpu_memory=np.int64(8 * 10**9), batch=np.int64(2), prompt_tokens=0, reserve=0)
    assert (p.batch, p.sequence_tokens, p.reserve, p.gpu_memory) == (2, 200, 0, 8 * 10**9)
    assert parse_bytes("1e3GB") == parse_bytes(10**12) == 10**12  # large, finite: still an amount
