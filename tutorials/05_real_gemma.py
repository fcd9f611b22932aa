# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · The released Gemma-3-12B pair on a GPU
#
# Tutorials 01-04 run on the toy pair by default and on the released
# Gemma-3-12B pair with `NLA_LENS_REAL=1`: the same code, one setting
# (`tutorials/_setup.py` holds the switch). This one is about that switch:
# what the real pair needs (memory, dtype, token, revision pins), which checks
# nla_lens runs before it trusts a checkpoint, and what scores to expect.
#
# Offline it runs the parts that need no weights: the release table, the
# published baselines, a memory plan, the hub resolution (and the error you get
# without network), and the sidecar checks, on the toy sidecar. The cells that
# load the 12B models run only when `NLA_LENS_REAL=1`.
#
# ```bash
# export HF_TOKEN=hf_...           # an account that accepted the Gemma licence
# export NLA_LENS_REAL=1
# python tutorials/05_real_gemma.py
# ```

# %%
import json
import math
import os
import re

import torch
import yaml
from _setup import (
    AR_REVISION,
    AV_REVISION,
    CHAT,
    REAL,
    REAL_PAIR,
    SUBJECT_REVISION,
    banner,
    load_pair,
    load_subject,
)
from transformers import AutoTokenizer

import nla_lens
from nla_lens import RELEASED_PAIRS, NLAError
from nla_lens.core import PUBLISHED_BASELINES
from nla_lens.core.loading import resolve_checkpoint
from nla_lens.core.sidecar import SIDECAR_NAME, load_sidecar, parse_sidecar, verify_tokenizer
from nla_lens.errors import CheckpointNotFoundError

banner("05 real Gemma")

# %% [markdown]
# ## The released pairs and their published baselines
#
# `fve_nrm` needs a baseline `Var(v_n)`; for released pairs nla_lens uses the
# one published for the pair's training distribution, keyed by the AV's hub id.

# %%
print(
    f"{'pair':<17} {'subject':<34} {'K':>3}/{'L':<3} {'d':>5} {'gated':>5} {'Var(v_n)':>9}  AV / AR"
)
for key, p in RELEASED_PAIRS.items():
    base = PUBLISHED_BASELINES[p.av]
    print(
        f"{key:<17} {p.subject:<34} {p.layer:>3}/{p.n_layers:<3} {p.d_model:>5} {p.gated!s:>5} "
        f"{base.variance:>9.4f}  {p.av} / {p.ar}"
    )

# %% [markdown]
# ## A memory plan
#
# Three models: the subject, the AV (a full fine-tuned chat model of the same
# size) and the AR (the first `K + 1` decoder blocks plus a `d x d` value
# head). In bf16 every parameter takes two bytes. The estimate below comes from
# the parameter count in the subject's name and the layer counts; activations
# and the KV cache of the AV's decode come on top (a few GB at batch 64).


# %%
def plan(pair) -> dict[str, float]:
    billions = float(re.search(r"(\d+(?:\.\d+)?)b", pair.subject.lower()).group(1))
    subject_gb = billions * 2  # bf16
    ar_gb = subject_gb * (pair.layer + 1) / pair.n_layers + pair.d_model**2 * 2 / 1e9
    return {"subject": subject_gb, "av": subject_gb, "ar": ar_gb}


for key, p in RELEASED_PAIRS.items():
    gb = plan(p)
    print(
        f"{key:<17} subject ~{gb['subject']:.0f} GB + AV ~{gb['av']:.0f} GB + AR ~{gb['ar']:.0f} GB "
        f"= ~{sum(gb.values()):.0f} GB in bf16"
    )

print()
print(
    "this machine:",
    f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no CUDA device",
    "| HF_TOKEN",
    "set" if os.environ.get("HF_TOKEN") else "not set",
    "| HF_HUB_OFFLINE =",
    os.environ.get("HF_HUB_OFFLINE", "0"),
)
if torch.cuda.is_available():
    free, total = torch.cuda.mem_get_info()
    print(f"GPU memory: {free / 1e9:.0f} GB free of {total / 1e9:.0f} GB")

# %% [markdown]
# The Gemma-3-12B pair (~65 GB) fits one 80 GB GPU. On a smaller one, serve
# the AV with SGLang or vLLM and pass `backend=` to `NLA.from_pretrained`
# (then only the AV's embedding table is loaded locally):
#
# ```python
# from nla_lens.backends.sglang import SGLangBackend   # server: --disable-radix-cache
# nla = NLA.from_pretrained(av_id, ar_id, backend=SGLangBackend("http://localhost:30000"))
# ```
#
# ## Resolving the checkpoints (and pinning them)
#
# Hub ids go through `huggingface_hub.snapshot_download`: `HF_TOKEN` (or
# `token=`) for the gated Gemma repos, the local cache, `HF_HUB_OFFLINE=1`.
# Pin what you publish: `revision=` (AV) and `ar_revision=` (AR) take a branch,
# tag or commit, and every `Explanation.provenance` records the commit it was
# made with. `_setup.py` reads `NLA_LENS_AV_REVISION`, `NLA_LENS_AR_REVISION`
# and `NLA_LENS_SUBJECT_REVISION`.
#
# Resolving finds (or, with `NLA_LENS_REAL=1`, downloads into the cache) the
# checkpoint files; it loads no weights. Offline and with an empty cache you get
# `nla_lens.CheckpointNotFoundError`, which says what to do.

# %%
print(
    f"pins: subject={SUBJECT_REVISION or 'main'} AV={AV_REVISION or 'main'} AR={AR_REVISION or 'main'}"
)
resolved = {}
for role, hub_id, revision in (
    ("av", REAL_PAIR.av, AV_REVISION),
    ("ar", REAL_PAIR.ar, AR_REVISION),
):
    try:
        src = resolve_checkpoint(hub_id, revision=revision, local_files_only=not REAL)
    except CheckpointNotFoundError as exc:
        print(f"{role}: {type(exc).__name__}: {exc}")
        print(
            f"    is an NLAError: {isinstance(exc, NLAError)}; is a FileNotFoundError: {isinstance(exc, FileNotFoundError)}"
        )
    else:
        resolved[role] = src
        print(f"{role}: {src.hub_id} @ commit {src.commit} -> {src.path}")

# %% [markdown]
# ## The sidecar checks
#
# Every NLA checkpoint ships `nla_meta.yaml`. At load time nla_lens parses it
# and checks it against the live tokenizer: the injection character must encode
# to exactly the sidecar's token id, occur once in the canonical AV prompt, and
# sit between the sidecar's neighbour ids; the AR prompt must end in the
# sidecar's suffix ids. Drift there would inject the vector at the wrong place:
# silent garbage, so it is an error.
#
# For the released Gemma-3-12B AV the contract fixes these values; we check the
# real sidecar against them when it is in the cache, else run the same checks
# on the toy AV's sidecar (the toy uses Gemma's marker character too).

# %%
GEMMA_12B_AV = {
    "d_model": 3840,
    "layer": 32,
    "injection_scale": 80000.0,
    "injection_char": "\u321c",
    "injection_token_id": 246566,
}

if "av" in resolved:
    av_dir = resolved["av"].path
    expected = GEMMA_12B_AV
else:
    from nla_lens.toy import EXTRACTION_LAYER, checkpoints

    av_dir = checkpoints().av
    toy_config = json.loads((av_dir / "config.json").read_text())
    expected = {
        "d_model": toy_config["hidden_size"],
        "layer": EXTRACTION_LAYER,
        "injection_char": "\u321c",
    }
meta = load_sidecar(av_dir)
tokenizer = AutoTokenizer.from_pretrained(str(av_dir))
print(
    f"{av_dir / SIDECAR_NAME}: role={meta.role} d_model={meta.d_model} K={meta.layer} "
    f"injection_scale={meta.injection_scale:g} mse_scale={meta.mse_scale:.4g}"
)
print(
    f"   marker {meta.injection_char!r} (U+{ord(meta.injection_char):04X}) id {meta.injection_token_id}, "
    f"neighbours ({meta.left_neighbor_id}, {meta.right_neighbor_id}); unknown keys: {list(meta.unknown_keys)}"
)
for field, want in expected.items():
    got = getattr(meta, field)
    print(f"   {field:<19} {got!r:<12} expected {want!r:<12} {'ok' if got == want else 'MISMATCH'}")
print("   injection site in the canonical AV prompt: position", verify_tokenizer(meta, tokenizer))

# %% [markdown]
# What the checks catch, on purpose: a sidecar whose marker id drifted from the
# tokenizer, and an AV sidecar without `injection_scale` (the most common cause
# of the CJK failure smell, tutorial 01).

# %%
raw = yaml.safe_load((av_dir / SIDECAR_NAME).read_text(encoding="utf-8"))
drifted = {
    **raw,
    "tokens": {**raw["tokens"], "injection_token_id": raw["tokens"]["injection_token_id"] + 1},
}
no_scale = {**raw, "extraction": {**raw["extraction"], "injection_scale": None}}
for name, bad in (("drifted marker id", drifted), ("no injection_scale", no_scale)):
    try:
        verify_tokenizer(parse_sidecar(bad, source=name), tokenizer)
    except NLAError as exc:
        print(f"{name}: {type(exc).__name__}: {exc}")

# %% [markdown]
# ## What scores to expect
#
# At Gemma-3-12B layer 32 the published baseline is `Var(v_n) = 0.0302` and
# the published in-distribution `fve_nrm` of the pair is 0.768. Because the
# activations cluster around their mean, `cos` is high for any explanation:
# read `fve_nrm`.

# %%
var = PUBLISHED_BASELINES[REAL_PAIR.av].variance
for fve in (0.768, 0.5, 0.0):
    mse = (1 - fve) * var
    print(f"fve_nrm {fve:>5.3f}  <=>  mse_nrm {mse:.4f}  <=>  cos {1 - mse / 2:.4f}")
print(f"(orthogonal: cos 0, mse_nrm 2, fve_nrm {1 - 2 / var:.1f})")

# %% [markdown]
# ## Run it (NLA_LENS_REAL=1 only)
#
# The same calls as tutorial 01: load the pair (bf16 on the GPU), the subject
# as `Gemma3ForConditionalGeneration`, capture a chat's residuals, explain
# them, and run the failure-smell check before reading anything.

# %%
if REAL:
    nla = load_pair()
    print(nla)
    prov = nla.provenance()
    print(
        f"AV commit {prov.av.commit}, AR commit {prov.ar.commit}: pin these with "
        "NLA_LENS_AV_REVISION / NLA_LENS_AR_REVISION to reproduce"
    )
    subject = load_subject("hf")
    print(type(subject.hf).__name__, next(subject.hf.parameters()).dtype)
    vectors = nla.capture(subject.model, CHAT, **subject.kwargs)[0]
    ids = subject.tokenizer.apply_chat_template(
        CHAT, tokenize=True, add_generation_prompt=True, return_dict=True
    )
    tokens = subject.tokenizer.convert_ids_to_tokens(ids["input_ids"])
    positions = list(range(10, len(tokens)))  # skip the noisy first 10 positions
    exps = nla.explain(vectors[positions])
    for p, e in zip(positions, exps, strict=True):
        print(
            f"[{p:>3}] {tokens[p]!r:<14} cos={e.cos:.4f} fve_nrm={e.fve_nrm:+.3f}  {e.text.splitlines()[0][:90]}"
        )
    distinct = len({e.text for e in exps})
    mean_fve = sum(e.fve_nrm for e in exps) / len(exps)
    print(
        f"{distinct}/{len(exps)} distinct explanations, mean fve_nrm {mean_fve:.3f} "
        f"(published in-distribution: 0.768)"
    )
    if distinct == 1 or mean_fve < 0:
        print(
            "FAILURE SMELL: one text for every vector or fve_nrm < 0: check the injection (tutorial 01)."
        )
else:
    print(
        "skipped: set NLA_LENS_REAL=1 (with HF_TOKEN and a GPU) to load the 12B pair and run this cell."
    )
print(
    f"nla_lens {nla_lens.__version__}, torch {torch.__version__}, sqrt(3840) = {math.sqrt(3840):.2f} "
    "(Gemma's embedding scale at d_model 3840)"
)
