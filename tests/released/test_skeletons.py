"""The whole path on released-format skeletons of all four released pairs: real tokenizer and
chat template, released sidecar values and config layouts, tiny random weights. What the
random AV writes is never checked; that every part runs and agrees is."""

from __future__ import annotations

import warnings

import pytest
import torch

from nla_lens import NLA
from nla_lens.core.loading import shared_tokenizer
from nla_lens.errors import NLAError

from .conftest import load_subject
from .skeleton import reference_av_prompt

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

CHAT = [{"role": "user", "content": "Where is the tower?"}]


@pytest.fixture(scope="module")
def loaded(skeleton):
    """(skeleton, NLA, subject model, subject tokenizer), loaded once per pair."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nla = NLA.from_pretrained(skeleton.av, skeleton.ar, device="cpu", strict_sidecar=True)
        model = load_subject(skeleton.subject)
    return skeleton, nla, model, shared_tokenizer(skeleton.subject)


def test_load_checks_and_injection_site(loaded) -> None:
    sk, nla, _model, tok = loaded
    spec = sk.spec
    assert nla.layer == sk.layer and nla.d_model == sk.d_model
    assert nla.av.meta.injection_scale == spec.injection_scale
    assert nla.av.meta.base_model == spec.released.subject
    ids, pos = reference_av_prompt(tok, spec.injection_char, spec.injection_token_id)
    assert nla.av.prompt_ids == ids and nla.av.injection_position == pos
    # the one parsed tokenizer serves AV, AR and a subject of the same base model
    assert nla.av.tokenizer is nla.ar.tokenizer is tok
    v = torch.randn(2, sk.d_model)
    embeds = nla.av.prompt_embeds(v)
    assert embeds.shape == (2, len(ids), sk.d_model)
    row = embeds[0, pos].double()
    assert float(row.norm()) == pytest.approx(spec.injection_scale, rel=1e-5)
    assert torch.allclose(row / row.norm(), v[0].double() / v[0].double().norm(), atol=1e-6)


def test_explain_and_score(loaded) -> None:
    sk, nla, _, _ = loaded
    exps = nla.explain(torch.randn(3, sk.d_model), max_new_tokens=4)
    assert len(exps) == 3
    assert all(e.cos is not None and -1.0 <= e.cos <= 1.0 for e in exps)
    assert all(e.mse_nrm == pytest.approx(2 * (1 - e.cos), abs=1e-5) for e in exps)
    # the AR on explanations of different lengths in one batch (right padding, any pad id)
    pred = nla.reconstruct(["short", "a much longer explanation of the vector than that"])
    alone = nla.reconstruct(["short"])
    assert torch.allclose(pred[0], alone[0], atol=1e-5)


def test_capture_of_a_chat_in_three_frameworks(loaded) -> None:
    from nla_lens.subjects import boot_bridge
    from tests.helpers import wrap_nnsight

    sk, nla, model, tok = loaded
    enc = tok.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True)
    ids = torch.tensor([list(enc["input_ids"] if hasattr(enc, "keys") else enc)])
    with torch.no_grad():
        want = model(input_ids=ids, output_hidden_states=True).hidden_states[sk.layer + 1]
    hf = nla.capture(model, CHAT, tokenizer=tok)
    assert hf.shape == want.shape and torch.allclose(hf, want, atol=1e-5)
    bridge = boot_bridge(model, tok)
    assert torch.allclose(nla.capture(bridge, CHAT), want, atol=1e-4)
    nns = wrap_nnsight(model, tok)
    assert torch.allclose(nla.capture(nns, CHAT), want, atol=1e-4)


def test_transcript_shows_decoded_tokens(loaded) -> None:
    _sk, nla, model, tok = loaded
    t = nla.transcript(model, CHAT, tokenizer=tok, max_new_tokens=3)
    enc = tok.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True)
    ids = list(enc["input_ids"] if hasattr(enc, "keys") else enc)
    assert [e.token for e in t.entries] == [tok.decode([i]) for i in ids]
    assert "".join(e.token for e in t.entries).endswith(
        tok.decode(ids, skip_special_tokens=False)[-8:]
    )
    assert not any(p in e.token for e in t.entries for p in ("\u2581", "\u0120"))
    assert any(e.token.startswith(" ") for e in t.entries)  # " is", " the", ...


def test_patching_and_steering(loaded) -> None:
    from nla_lens import activation_patching
    from nla_lens.experiments.steering import add_direction, steered_generate

    sk, nla, model, tok = loaded
    clean, corrupt = "The cat sat on the mat", "The dog sat on the mat"
    assert len(tok(clean)["input_ids"]) == len(tok(corrupt)["input_ids"])
    a, b = (tok.encode(w, add_special_tokens=False)[0] for w in (" mat", " rug"))
    df = activation_patching(
        nla, model, clean, corrupt, layers=[0, sk.layer], positions=[-1, -4],
        answer_tokens=(a, b), tokenizer=tok, max_new_tokens=3, n_boot=50,
    )  # fmt: skip
    assert len(df) == 4 and df["explanation"].map(lambda s: isinstance(s, str)).all()
    direction = nla.steering_vector("a cat")
    run0 = nla.explain_run(model, clean, tokenizer=tok, positions=[-1], max_new_tokens=2)
    run1 = nla.explain_run(
        model, clean, tokenizer=tok, positions=[-1], max_new_tokens=2,
        **add_direction(direction, 2.0, sk.layer, positions=[-1]),
    )  # fmt: skip
    moved = run1.vectors[0] - run0.vectors[0]
    assert torch.allclose(moved, 2.0 * direction, atol=1e-3 * float(direction.norm()))
    out = steered_generate(model, clean, direction, 4.0, sk.layer, tokenizer=tok, max_new_tokens=3)
    assert out.token_ids.shape[1] == out.prompt_length + 3 or len(out.texts) == 1


@pytest.mark.parametrize("kind", ["sglang", "vllm"])
def test_server_payloads_against_loopback(loaded, kind) -> None:
    """nla_lens builds the embeddings from the AV's table alone (multimodal key names and the
    Gemma embedding scale included) and the loopback engine decodes them as in-process."""
    from tests.serving.loopback import LoopbackServer
    from tests.serving.test_wire import make_client

    sk, nla, _, _ = loaded
    v = torch.randn(2, sk.d_model)
    want = nla.explain(v, max_new_tokens=4, score=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = LoopbackServer(sk.av_plain)
    with server:
        remote = NLA.from_pretrained(
            sk.av, sk.ar, device="cpu", backend=make_client(kind, server.url)
        )
        assert remote.av.model is None
        assert torch.allclose(remote.av.prompt_embeds(v), nla.av.prompt_embeds(v), atol=1e-5)
        got = remote.explain(v, max_new_tokens=4, score=False)
    assert [e.raw for e in got] == [e.raw for e in want]


def test_a_wrong_marker_is_refused(skeleton, tmp_path) -> None:
    """Sidecar drift against the real tokenizer: the check names it."""
    import shutil

    import yaml

    bad = tmp_path / "av"
    shutil.copytree(skeleton.av, bad)
    meta = yaml.safe_load((bad / "nla_meta.yaml").read_text())
    meta["tokens"]["injection_left_neighbor_id"] += 1
    (bad / "nla_meta.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True))
    with pytest.raises(NLAError, match="neighbour drift"):
        NLA.from_pretrained(bad, device="cpu")
