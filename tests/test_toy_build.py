"""The shipped toy checkpoints (``python -m nla_lens.toy build``): files, sidecars,
tokenizer invariants, multimodal layout, AR layout. No training here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    GenerationConfig,
)

from nla_lens.core.sidecar import load_sidecar, verify_tokenizer
from nla_lens.errors import CheckpointNotFoundError
from nla_lens.toy import EXTRACTION_LAYER, checkpoints

pytestmark = pytest.mark.integration

K = EXTRACTION_LAYER
D = 64
HF_FILES = (
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "README.md",
)


def _ids(encoded) -> list[int]:
    if hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return [int(i) for i in encoded]


def _meta(path: Path) -> dict:
    return yaml.safe_load((path / "nla_meta.yaml").read_text(encoding="utf-8"))


def _content_ids(tok) -> list[int]:
    from nla_lens.toy.tokenizer import content_token_ids

    return content_token_ids(tok)


@pytest.fixture(scope="module")
def tok(toy):
    return AutoTokenizer.from_pretrained(str(toy.av))


def test_checkpoints_api(tmp_path):
    ck = checkpoints()
    for p in (ck.subject, ck.subject_multimodal, ck.av, ck.ar):
        assert p.is_dir() and (p / "config.json").is_file()
    assert ck.quality.is_file()
    with pytest.raises(CheckpointNotFoundError, match=r"python -m nla_lens\.toy build"):
        checkpoints(tmp_path)


def test_files_present(toy):
    for name in ("subject", "subject_multimodal", "av", "ar"):
        d = getattr(toy, name)
        missing = [f for f in HF_FILES if not (d / f).is_file()]
        assert not missing, f"{name}: missing {missing}"
    for name in ("av", "ar"):
        assert (getattr(toy, name) / "nla_meta.yaml").is_file()
    assert (toy.ar / "value_head.safetensors").is_file()
    # One tokenizer for all four.
    blobs = {
        (getattr(toy, n) / "tokenizer.json").read_bytes()
        for n in ("subject", "subject_multimodal", "av", "ar")
    }
    assert len(blobs) == 1


@pytest.mark.parametrize("role", ["av", "ar"])
def test_sidecar_fields(toy, tok, role):
    d = getattr(toy, role)
    meta = _meta(d)
    assert meta["kind"] == "nla_model" and meta["schema_version"] == 2
    assert meta["role"] == role and meta["stage"] == f"{role}_sft"
    assert meta["base_checkpoint"] == "nla-lens/toy-gemma3-subject"
    assert meta["parent_checkpoints"] == [meta["base_checkpoint"]]
    assert meta["trained_on"] and isinstance(meta["trained_on"], list)
    assert meta["d_model"] == D and meta["extraction_layer_index"] == K
    assert "created_at" not in meta  # reproducible build: no timestamps
    ex = meta["extraction"]
    assert ex["mse_scale"] == pytest.approx(math.sqrt(D))
    if role == "av":
        assert isinstance(ex["injection_scale"], float) and ex["injection_scale"] > 0
    else:
        assert ex["injection_scale"] is None
        assert meta["ar"] == {"num_hidden_layers": K}
    t = meta["tokens"]
    assert t["injection_char"] == "\u321c"
    assert _ids(tok.encode(t["injection_char"], add_special_tokens=False)) == [
        t["injection_token_id"]
    ]
    # as in the released Gemma sidecars: `<concept>` ends in ">", `</concept>` starts with "</"
    assert t["injection_left_neighbor_id"] == tok.convert_tokens_to_ids(">")
    assert t["injection_right_neighbor_id"] == tok.convert_tokens_to_ids("</")
    # tokenize(AR template suffix)[1:], as the released sidecars define it
    assert tok.convert_ids_to_tokens(t["critic_suffix_ids"]) == [
        "text",
        ">",
        "\u2581<",
        "summary",
        ">",
    ]
    templates = meta["prompt_templates"]
    assert "{injection_char}" in templates["av"] and "meticulous AI researcher" in templates["av"]
    assert templates["ar"] == "Summary of the following text: <text>{explanation}</text> <summary>"
    # The library's own parser accepts it, with no unknown keys, and agrees with the tokenizer.
    parsed = load_sidecar(d, strict=True)
    assert parsed.layer == K and parsed.d_model == D
    verify_tokenizer(parsed, AutoTokenizer.from_pretrained(str(d)))


def test_tokenizer_invariants(toy, tok):
    meta = _meta(toy.av)
    bos, unk = tok.bos_token_id, tok.unk_token_id
    assert (tok.pad_token_id, tok.eos_token_id, bos, unk) == (0, 1, 2, 3)
    assert tok.eos_token == "<eos>"
    content = meta["prompt_templates"]["av"].format(injection_char=meta["tokens"]["injection_char"])
    ids = _ids(
        tok.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True
        )
    )
    assert ids[0] == bos and ids.count(bos) == 1 and unk not in ids
    assert tok.convert_ids_to_tokens(ids[-3:]) == ["<start_of_turn>", "model", "\n"]
    marker = meta["tokens"]["injection_token_id"]
    assert ids.count(marker) == 1
    p = ids.index(marker)
    assert (ids[p - 1], ids[p + 1]) == (
        meta["tokens"]["injection_left_neighbor_id"],
        meta["tokens"]["injection_right_neighbor_id"],
    )
    # As in Gemma-3: the tags are text split into pieces, and the marker sits between
    # ">" and "</" (the released Gemma sidecars' neighbours).
    assert tok.convert_ids_to_tokens(ids[p - 3 : p + 4]) == [
        "<", "concept", ">", meta["tokens"]["injection_char"], "</", "concept", ">",
    ]  # fmt: skip
    assert tok.get_added_vocab().keys() == set(tok.all_special_tokens) | {
        "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
        "<image_soft_token>",
    }  # fmt: skip
    explanation = (
        'facts: 1 so far\nreading "the cat is": cat, fact 2; facts: dog in house\n'
        'token " is"; next comes in'
    )
    ar_ids = _ids(
        tok(meta["prompt_templates"]["ar"].format(explanation=explanation), add_special_tokens=True)
    )
    assert ar_ids[0] == bos and ar_ids.count(bos) == 1 and unk not in ar_ids
    assert tok.convert_ids_to_tokens(ar_ids[-3:]) == ["\u2581<", "summary", ">"]
    # Decoding gives the text back exactly (spaces and newlines included), tags survive
    # skip_special_tokens, and the chat tokens do not.
    text = f"<explanation>{explanation}</explanation>"
    gen = _ids(tok.encode(text, add_special_tokens=False))
    gen += [tok.convert_tokens_to_ids("<end_of_turn>"), tok.eos_token_id]
    assert tok.decode(gen, skip_special_tokens=True) == text
    # Every content piece round-trips through decode -> encode after a word (what the AR
    # relies on), each word comes bare and after a space.
    cids = _content_ids(tok)
    assert 800 <= len(cids) <= 1000
    spaced = [i for i in cids if tok.convert_ids_to_tokens(i).startswith("\u2581")]
    assert 2 * len(spaced) == len(cids)
    assert _ids(tok.encode("the" + tok.decode(spaced), add_special_tokens=False))[1:] == spaced
    gc = GenerationConfig.from_pretrained(str(toy.av))
    assert set(gc.eos_token_id) == {tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")}


def test_multimodal_equals_plain(toy, tok):
    plain = AutoModelForCausalLM.from_pretrained(str(toy.subject), dtype=torch.float32).eval()
    mm, info = AutoModelForImageTextToText.from_pretrained(
        str(toy.subject_multimodal), dtype=torch.float32, output_loading_info=True
    )
    mm.eval()
    assert type(mm).__name__ == "Gemma3ForConditionalGeneration"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert len(mm.model.language_model.layers) == plain.config.num_hidden_layers
    assert mm.config.text_config.hidden_size == D
    assert mm.config.image_token_id == tok.convert_tokens_to_ids("<image_soft_token>")
    g = torch.Generator().manual_seed(0)
    vocab = torch.tensor(_content_ids(tok))
    ids = torch.cat(
        [
            torch.full((3, 1), tok.bos_token_id),
            vocab[torch.randint(len(vocab), (3, 20), generator=g)],
        ],
        1,
    )
    with torch.inference_mode():
        a = plain(input_ids=ids, output_hidden_states=True).hidden_states[K + 1]
        b = mm(input_ids=ids, output_hidden_states=True).hidden_states[K + 1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # (The trained subject's layer-K residual is no longer dominated by the token's own
    # embedding; test_av_names_the_token checks the token is still readable from it.)
    torch.testing.assert_close(
        plain(input_ids=ids).logits, mm(input_ids=ids).logits, atol=1e-4, rtol=0
    )


def test_ar_layout(toy):
    cfg = AutoConfig.from_pretrained(str(toy.ar))
    assert cfg.num_hidden_layers == K + 1 and len(cfg.layer_types) == K + 1
    assert cfg.hidden_size == D
    head = load_file(str(toy.ar / "value_head.safetensors"))
    assert (
        set(head) == {"weight"}
        and head["weight"].shape == (D, D)
        and head["weight"].dtype == torch.float32
    )
    model, info = AutoModelForCausalLM.from_pretrained(str(toy.ar), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert len(model.model.layers) == K + 1


def test_weights_are_float32(toy):
    for name in ("subject", "subject_multimodal", "av", "ar"):
        tensors = load_file(str(getattr(toy, name) / "model.safetensors"))
        assert {t.dtype for t in tensors.values()} == {torch.float32}, name


def test_quality_json(toy):
    q = json.loads((toy.av.parent / "quality.json").read_text())
    assert set(q) == {
        "accuracy", "exact", "fve_nrm", "mse_nrm", "cos", "baseline_var", "n",
        "chat_terminated", "chat_accuracy", "chat_max_new_tokens", "chat_n",
        "confident", "next_named", "next_n", "task_next_named", "task_next_n",
        "task_fve_nrm", "task_token_named", "task_entity_named", "task_positions",
        "prefix_rise", "swap_lowers",
        "task_accuracy", "patch_layer", "patch_recovery", "patch_recovery_control",
        "steer_alpha", "steer_success", "steer_full_success", "steer_edit_success", "task_n",
        "baselines",
    }  # fmt: skip
    assert q["accuracy"] >= 0.8 and q["fve_nrm"] >= 0.5 and q["n"] >= 500
    assert 0 < q["baseline_var"] <= 4
    assert q["fve_nrm"] == pytest.approx(1 - q["mse_nrm"] / q["baseline_var"], abs=2e-3)
    # The baselines the toy ships: one per distribution its demo and tutorials use.
    assert set(q["baselines"]) == {"generic", "task", "chat"}
    assert q["baselines"]["generic"]["variance"] == q["baseline_var"]
    for b in q["baselines"].values():
        assert 0 < b["variance"] <= 4 and b["n"] >= 500 and b["source"].startswith("toy build")
    # Every position of chat-formatted prompts (template and special tokens included).
    assert q["chat_terminated"] >= 0.99 and q["chat_max_new_tokens"] <= 96
    assert q["chat_accuracy"] >= 0.8 and q["chat_n"] >= 500
    # The subject's confident next token, named by the AV; the task (see test_toy_world.py
    # and test_toy_explanations.py, which measure these through the library).
    assert q["confident"] == 0.5 and q["next_named"] >= 0.7 and q["next_n"] >= 500
    assert min(q["task_fve_nrm"].values()) >= 0.6 and q["task_token_named"] >= 0.9
    assert q["task_entity_named"] >= 0.7 and q["task_positions"] >= 500
    # the builder swaps line 1 only (the context, the least token-bound line); the library's
    # random-line swap is measured in test_toy_explanations.py (goal >= 0.9)
    assert q["prefix_rise"] >= 0.8 and q["swap_lowers"] >= 0.75
    assert q["task_accuracy"] >= 0.9 and q["patch_layer"] <= K
    assert q["patch_recovery"] >= 0.8 and q["patch_recovery_control"] <= 0.2
    assert q["steer_alpha"] <= 1 and q["steer_success"] >= 0.8 and q["steer_edit_success"] >= 0.8


def test_attention_shape_servable_by_vllm(toy):
    """vLLM's CPU attention rejects head_dim 16: the toy uses 4 heads of 32 over d_model 64."""
    for name in ("subject", "av", "ar"):
        cfg = AutoConfig.from_pretrained(str(getattr(toy, name)))
        assert (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim) == (D, 4, 32), name
        assert cfg.query_pre_attn_scalar == 32
    mm = AutoConfig.from_pretrained(str(toy.subject_multimodal))
    assert mm.text_config.head_dim == 32


def test_subject_declares_its_hub_id(toy, nla):
    """config.json carries nla_lens_model_id = the sidecars' base_checkpoint, so the library's
    base-model check accepts the local toy subject in both layouts, silently."""
    import warnings

    from nla_lens.subjects.guards import MODEL_ID_KEY

    base = _meta(toy.av)["base_checkpoint"]
    assert nla.base_model == base
    for name in ("subject", "subject_multimodal"):
        assert getattr(AutoConfig.from_pretrained(str(getattr(toy, name))), MODEL_ID_KEY) == base
    for name in ("av", "ar"):  # the AV and AR are not the subject
        assert not hasattr(AutoConfig.from_pretrained(str(getattr(toy, name))), MODEL_ID_KEY)
    plain = AutoModelForCausalLM.from_pretrained(str(toy.subject))
    mm = AutoModelForImageTextToText.from_pretrained(str(toy.subject_multimodal))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nla.check_subject(plain)
        nla.check_subject(mm)


def test_av_names_the_token(toy, tok):
    """Real residuals of random text through the builder's own recipe (greedy): the AV
    names the token (quality.json: 0.8 of 600 held-out positions)."""
    from nla_lens.toy import read_explanation
    from nla_lens.toy.recipe import av_prompt, extract_explanation, greedy_explain

    subject = AutoModelForCausalLM.from_pretrained(str(toy.subject)).eval()
    av = AutoModelForCausalLM.from_pretrained(str(toy.av)).eval()
    scale = _meta(toy.av)["extraction"]["injection_scale"]
    g = torch.Generator().manual_seed(99)
    vocab = torch.tensor(_content_ids(tok))
    ids = torch.cat(
        [
            torch.full((48, 1), tok.bos_token_id),
            vocab[torch.randint(len(vocab), (48, 24), generator=g)],
        ],
        1,
    )
    with torch.inference_mode():
        hs = subject(input_ids=ids, output_hidden_states=True).hidden_states[K + 1]
    pos = torch.randint(2, 25, (48,), generator=g)
    texts = greedy_explain(av, tok, av_prompt(tok), hs[torch.arange(48), pos], scale)
    words = [tok.decode([int(i)]) for i in ids[torch.arange(48), pos]]
    named = [read_explanation(extract_explanation(t)).token for t in texts]
    hits = sum(n == w for n, w in zip(named, words, strict=True))
    assert hits >= 0.7 * 48, list(zip(texts, words, strict=True))


def test_av_closes_on_chat_template_tokens(toy, tok):
    """Every position of a chat-formatted prompt (<bos>, <start_of_turn>, role words,
    <end_of_turn>, an unknown word) gets a short, closed explanation naming the token in
    words that survive skip_special_tokens (and, where the subject is confident, its next
    token); no decode runs to the token cap."""
    from nla_lens.toy import read_explanation
    from nla_lens.toy.labels import piece_text
    from nla_lens.toy.recipe import av_prompt, extract_explanation, greedy_explain
    from nla_lens.toy.targets import next_name
    from nla_lens.toy.vocab import CONFIDENT

    subject = AutoModelForCausalLM.from_pretrained(str(toy.subject)).eval()
    av = AutoModelForCausalLM.from_pretrained(str(toy.av)).eval()
    scale = _meta(toy.av)["extraction"]["injection_scale"]
    chat = [
        {"role": "user", "content": "the cat went to the old house"},
        {"role": "assistant", "content": "it is a big house xyzzy"},  # xyzzy -> <unk>
        {"role": "user", "content": "where is it?"},
    ]
    ids = _ids(tok.apply_chat_template(chat, tokenize=True, add_generation_prompt=True))
    assert tok.unk_token_id in ids
    with torch.inference_mode():
        out = subject(input_ids=torch.tensor([ids]), output_hidden_states=True)
    texts = greedy_explain(av, tok, av_prompt(tok), out.hidden_states[K + 1][0], scale)
    tokens = tok.convert_ids_to_tokens(ids)
    assert all("</explanation>" in t for t in texts), list(zip(tokens, texts, strict=True))
    readings = [read_explanation(extract_explanation(t)) for t in texts]
    got = [(r.token, r.next) for r in readings]
    names = [piece_text(tok, i)[0] for i in ids]
    # The trained subject's layer-K residual is less token-dominated: a few words of this
    # natural chat may be misread (held-out chats: quality.json chat_accuracy).
    assert sum(g[0] == n for g, n in zip(got, names, strict=True)) >= 0.8 * len(names), got
    assert got[0][0] == "start of text" and got[1][0] == "start of turn"
    assert [r.kind for r in readings[:1]] == ["start"]
    # the toy learned chats of random words: natural words in a turn are often read as
    # random text (20 of 34 read as chat here), never as the start of a text
    kinds = [r.kind for r in readings[2:]]
    assert kinds.count("chat") >= 0.5 * len(kinds) and "start" not in kinds, kinds
    probs = out.logits[0].softmax(-1).max(-1)
    nexts = [next_name(tok, i) for i in probs.indices.tolist()]
    sure = [
        (n, g[1])
        for n, g, p in zip(nexts, got, probs.values.tolist(), strict=False)
        if p >= CONFIDENT + 0.2
    ]
    assert sum(a == b for a, b in sure) >= 0.7 * len(sure), sure


@pytest.mark.slow
def test_base_build_is_deterministic(toy, tmp_path):
    """Building the tokenizer and the subjects twice (a short training run) gives the same
    bytes, on 2 threads (the build's) as on 1; with NLA_LENS_TOY_FULL_REBUILD=1 the full
    subject build gives the shipped bytes (on the kind of CPU that built them)."""
    import dataclasses
    import os

    from nla_lens.toy.build import SUBJECT_THREADS, BuildConfig, build_base
    from nla_lens.toy.subject import build_subject
    from nla_lens.toy.tokenizer import build_tokenizer
    from nla_lens.toy.train import TrainConfig

    if os.environ.get("NLA_LENS_TOY_FULL_REBUILD") == "1":
        build_base(tmp_path / "a")
        reference = toy.root
    else:
        # batch 64 as in the build: big enough that the kernels split work across threads
        short = dataclasses.replace(
            BuildConfig(),
            subject_task=600,
            subject_random=120,
            subject_chat=90,
            subject=TrainConfig(steps=6, batch_size=64, lr=3e-3, warmup=1, seed=3),
        )
        assert SUBJECT_THREADS == 2
        build_base(tmp_path / "a", cfg=short)
        build_base(tmp_path / "b", cfg=short, threads=1)
        reference = tmp_path / "b"
        initial = build_subject(build_tokenizer(), short.seed).state_dict()
        trained = load_file(str(tmp_path / "a" / "subject" / "model.safetensors"))
        assert all(not torch.equal(v, initial[k]) for k, v in trained.items()), (
            "every weight must move (else equal bytes prove little)"
        )
    for name in ("subject", "subject_multimodal"):
        for f in sorted((reference / name).iterdir()):
            rebuilt = tmp_path / "a" / name / f.name
            assert rebuilt.read_bytes() == f.read_bytes(), f"{name}/{f.name} differs"


def test_length_buckets_give_the_one_batch_loss(toy):
    """The AV's and the AR's training steps run each batch as sub-batches of similar length
    (less padding): the same loss, gradients and reconstructions as one padded batch, to
    float precision, with the rows in their order."""
    from nla_lens.toy.build import load_saved
    from nla_lens.toy.recipe import av_prompt, reconstruct_ids
    from nla_lens.toy.train import _av_loss, _buckets, _reconstruct_bucketed

    assert _buckets([5, 3, 9, 3], 2) == [[1, 3], [0, 2]]
    assert _buckets([5, 3, 9], 1) == [[0, 1, 2]]  # one bucket keeps the order
    assert _buckets([4, 2], 3) == [[1], [0]]  # never an empty bucket
    tok, _subject, av, ar, head, scale, _mse = load_saved(toy.root)
    g = torch.Generator().manual_seed(0)
    lengths = [3, 17, 9, 30, 5, 12, 25, 8]
    rows = [torch.randint(10, len(tok), (n,), generator=g).tolist() for n in lengths]
    prompts = [[int(tok.bos_token_id), *r] for r in rows]
    torch.testing.assert_close(
        _reconstruct_bucketed(ar, head, prompts, 3), reconstruct_ids(ar, head, prompts)
    )
    vectors = torch.randn(len(rows), av.config.hidden_size, generator=g)
    prompt, pad = av_prompt(tok), int(tok.pad_token_id)
    results = []
    for buckets in (1, 2, 3):
        av.zero_grad()
        loss, right = _av_loss(av, prompt, rows, vectors, scale, pad, buckets)
        loss.backward()
        results.append((loss.detach(), right, av.lm_head.weight.grad.clone()))
    for loss, right, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        torch.testing.assert_close(grad, results[0][2])
        assert right == results[0][1]


@pytest.mark.slow
def test_the_av_gives_the_same_bytes_when_it_takes_a_second_thread(toy):
    """The build runs the AV on one thread beside the AR, then on two once the AR is
    done: a short AV run that switches midway gives the bytes of one on a single thread.
    (The AR's kernels do not keep their bytes across thread counts, so it keeps one.)"""
    import dataclasses

    from nla_lens.toy.build import BuildConfig, _chats, _deterministic, _generic, _tasks, load_saved
    from nla_lens.toy.recipe import av_prompt
    from nla_lens.toy.residuals import concat
    from nla_lens.toy.targets import Targets
    from nla_lens.toy.train import make_av, train_av

    tok, subject, _av, _ar, _head, scale, _mse = load_saved(toy.root)
    cfg = dataclasses.replace(BuildConfig().av, steps=6)
    weights = []
    with _deterministic():
        data = concat(
            _generic(subject, tok, 128, 32, 2, False), _chats(subject, tok, 64, 4),
            _tasks(subject, tok, 128, 7),
        )  # fmt: skip
        for threads in (lambda: 1, iter([1, 1, 1, 2, 2, 2]).__next__):
            av = make_av(subject)
            train_av(av, Targets(tok), av_prompt(tok), data, scale, cfg, threads)
            weights.append([p.detach().clone() for p in av.parameters()])
        assert torch.get_num_threads() == 2  # the switch happened
    start = [p.detach() for p in make_av(subject).parameters()]
    assert all(not torch.equal(a, s) for a, s in zip(weights[0], start, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


@pytest.mark.slow
def test_measuring_gives_the_same_figures_on_one_thread_or_two(toy, tmp_path):
    """The build measures on two threads: quality.json is the one a single thread writes
    (a small held-out set here; the full build's quality.json is the shipped one)."""
    import dataclasses
    import shutil

    from nla_lens.toy.build import BuildConfig, measure

    cfg = dataclasses.replace(
        BuildConfig(),
        heldout_sequences=48,
        chat_heldout_sequences=2,
        task_heldout_prompts=3,
        world_pairs=6,
    )
    figures = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}"
        for name in ("subject", "av", "ar"):
            shutil.copytree(getattr(toy, name), out / name)
        measure(out, cfg, threads=threads)
        figures.append((out / "quality.json").read_bytes())
    assert figures[0] == figures[1]


def test_compare_to_reports_which_built_files_differ(tmp_path, capsys):
    """`python -m nla_lens.toy build --compare-to DIR` checks the bytes of a build."""
    from nla_lens.toy.__main__ import _compare

    out, ref = tmp_path / "out", tmp_path / "ref"
    for d in (out, ref):
        (d / "av").mkdir(parents=True)
        (d / "av" / "config.json").write_text("{}")
        (d / "quality.json").write_text('{"accuracy": 0.855}')
    assert _compare(out, None) == 0 and capsys.readouterr().out == ""
    assert _compare(out, ref) == 0
    assert "2 of 2 built files equal" in capsys.readouterr().out
    (out / "quality.json").write_text('{"accuracy": 0.79}')
    assert _compare(out, ref) == 1
    printed = capsys.readouterr().out
    assert "1 of 2 built files equal" in printed and "differs: quality.json" in printed
    assert "kind of CPU" in printed
    assert _compare(out, tmp_path / "missing") == 2


@pytest.mark.slow
def test_the_parallel_schedule_gives_the_bytes_of_one_process(toy, tmp_path):
    """`train_parallel` (AV and AR in two processes, the AV taking a second thread once the
    AR is saved) writes the AV and AR that one process on one thread writes (short runs)."""
    import dataclasses
    import shutil

    from nla_lens.toy.build import BuildConfig, load_saved, train_pair, train_parallel
    from nla_lens.toy.train import TrainConfig

    cfg = dataclasses.replace(
        BuildConfig(),
        train_sequences=64,
        chat_train_sequences=32,
        task_train_sequences=64,
        av=TrainConfig(steps=10, batch_size=64, lr=2e-3, seed=11),
        ar=TrainConfig(steps=2, batch_size=64, lr=3e-3, seed=12),
    )
    for name in ("a", "b"):
        shutil.copytree(toy.subject, tmp_path / name / "subject")
    train_parallel(tmp_path / "a", cfg)
    tok, subject = load_saved(toy.root)[:2]
    train_pair(tmp_path / "b", cfg, tok, subject)
    for f in ("av/model.safetensors", "ar/model.safetensors", "ar/value_head.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    shipped = load_file(str(toy.av / "model.safetensors"))
    short = load_file(str(tmp_path / "a" / "av" / "model.safetensors"))
    assert any(not torch.equal(v, shipped[k]) for k, v in short.items())
