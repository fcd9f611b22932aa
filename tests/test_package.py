"""Package hygiene: the public API, lazy optional imports, no import side effects."""

from __future__ import annotations

import json
import subprocess
import sys

import nla_lens


def test_public_names():
    for name in nla_lens.__all__:
        assert hasattr(nla_lens, name), name
    for name in ("NLA", "NLAError", "Explanation", "Verbalizer", "Reconstructor"):
        assert name in nla_lens.__all__
    from nla_lens import errors

    assert issubclass(errors.VectorError, nla_lens.NLAError)
    assert all(issubclass(getattr(errors, n), nla_lens.NLAError) for n in errors.__all__)
    assert all(
        issubclass(getattr(nla_lens, n), nla_lens.NLAError)
        for n in nla_lens.__all__
        if n.endswith("Error")
    )


def test_import_is_light_and_side_effect_free():
    code = (
        "import sys, json; hook = sys.excepthook; import nla_lens, nla_lens.subjects, nla_lens.backends; "
        "print(json.dumps({'mods': sorted(m for m in ('nnsight', 'transformer_lens', 'aiohttp', 'vllm', "
        "'pandas', 'matplotlib') if m in sys.modules), 'hook': sys.excepthook is hook}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"mods": [], "hook": True}


def test_public_tensor_signatures_are_typed():
    import inspect

    from nla_lens.core.metrics import score_vectors

    for fn in (
        nla_lens.Verbalizer.prompt_embeds,
        nla_lens.Reconstructor.reconstruct,
        nla_lens.NLA.capture,
        score_vectors,
    ):
        ret = inspect.signature(fn).return_annotation
        assert "d_model" in str(ret) or "Scores" in str(ret), (fn, ret)
