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
# # 04 · Transcripts, search, and steering
#
# * a **transcript** explains every token of a chat (and of a reply the subject
#   generates), flags the known-noisy positions, and renders as text, notebook
#   HTML or a DataFrame;
# * **search** ranks positions by how close their residual is to the AR's
#   reconstruction of a description you write;
# * **steering by description** turns a description into a layer-`K` direction
#   (through the AR) and adds it during a forward pass;
# * **steering by edit** edits an explanation and moves the residual by
#   `AR(edited) - AR(original)`, then explains the result to check the edit took.
#
# This one uses a plain Hugging Face model (hooks on its decoder blocks); the
# same calls take a TransformerBridge or an nnsight model.

# %%
import re

import matplotlib.pyplot as plt
import torch
from _setup import (
    CHAT,
    CLEAN_TEXT,
    CLEAN_WORD,
    CORRUPT_WORD,
    MAX_NEW_TOKENS,
    banner,
    check_known_words,
    describe,
    load_pair,
    load_subject,
    save_figure,
    save_html,
    single_token_id,
)

from nla_lens.experiments.steering import add_direction, steer_by_edit

banner("04 transcripts and steering")
nla = load_pair()
subject = load_subject("hf")
model, tok = subject.model, subject.tokenizer
check_known_words(tok, CHAT[0]["content"], CLEAN_TEXT)

# %% [markdown]
# ## A per-token transcript of a chat
#
# `reply_tokens=6` lets the subject answer first (greedy), then reads the
# prompt and the reply in one ordinary forward pass. `max_new_tokens` caps each
# explanation (see `_setup.MAX_NEW_TOKENS`); an explanation cut by the cap is
# marked truncated.

# %%
transcript = nla.transcript(
    model, CHAT, reply_tokens=6, max_new_tokens=MAX_NEW_TOKENS, **subject.kwargs
)
print("reply:", repr(transcript.meta["reply"]))
print(transcript.to_text())

save_html(transcript.to_html(), "04_transcript.html")

# %% [markdown]
# As a DataFrame: one row per (position, sample). The flags mark the known-noisy
# positions (first 10 tokens, BOS, outlier norms); compare their scores with
# the rest.

# %%
df = transcript.to_frame()
print(
    df[["position", "token", "section", "norm", "fve_nrm", "flags"]]
    .tail(8)
    .round(3)
    .to_string(index=False)
)
print()
print(df.groupby(["section", "noisy"])[["norm", "cos", "fve_nrm"]].mean().round(3))

# %% [markdown]
# ## Search by description
#
# Where does the model represent something? `nla.search` reconstructs the
# description with the AR and ranks the transcript's positions by cosine
# (after both are normalised as in scoring). `centered=True` subtracts the
# activations' mean first, which matters where residuals cluster around their
# mean (Gemma-3-12B layer 32).

# %%
query = describe("river")
print(f"query: {query!r}")
for centered in (False, True):
    hits = nla.search(query, transcript, top_k=3, centered=centered)
    print(f"centered={centered}:")
    for h in hits:
        print(
            f"   #{h.rank} pos {h.position:>2} {h.token!r:<10} score={h.score:.3f}  {h.explanation.splitlines()[0][:70]}"
        )

# %% [markdown]
# ## Steering by description
#
# `nla.steering_vector(description)` is the AR's reconstruction of the
# description, unit-normalised and scaled to a typical residual norm (here, the
# median norm of our own activations); `subtract=` makes it contrastive.
# `add_direction(direction, alpha, layer, positions=...)` returns the
# hook keywords for this kind of model, for `nla.explain_run`.
#
# We steer the clean sentence at the animal's position, at layer `K`, toward
# the other animal, and explain the steered residual.

# %%
ids = tok(CLEAN_TEXT)["input_ids"]
p = ids.index(single_token_id(tok, CLEAN_WORD))
h = nla.capture(model, CLEAN_TEXT, **subject.kwargs)[0]  # [seq, d_model]
directions = {
    "add": nla.steering_vector(describe(CORRUPT_WORD), reference=h[1:]),
    "contrast": nla.steering_vector(
        describe(CORRUPT_WORD), subtract=describe(CLEAN_WORD), reference=h[1:]
    ),
}
answers = single_token_id(tok, CLEAN_WORD), single_token_id(tok, CORRUPT_WORD)
alphas = [0.0, 0.25, 0.5, 1.0, 2.0]
sweep = []
for kind, direction in directions.items():
    for alpha in alphas:
        edit = add_direction(direction, alpha, nla.layer, positions=p)
        run = nla.explain_run(
            model, CLEAN_TEXT, positions=[p], label=f"{kind} {alpha:g}", **edit, **subject.kwargs
        )
        e, v = run.explanations[0], run.vectors[0]
        sweep.append(
            {
                "kind": kind,
                "alpha": alpha,
                "explanation": e.text.splitlines()[0][:70],
                "fve_nrm": e.fve_nrm,
                "cos_to_direction": float(torch.cosine_similarity(v, direction.cpu(), dim=0)),
                "logit_diff_last": float(
                    run.logits[0, -1, answers[0]] - run.logits[0, -1, answers[1]]
                ),
            }
        )
for row in sweep:
    print(
        f"{row['kind']:<8} alpha={row['alpha']:<5g} cos_dir={row['cos_to_direction']:+.3f} "
        f"fve={row['fve_nrm']:+.3f} logit({CLEAN_WORD})-logit({CORRUPT_WORD})={row['logit_diff_last']:+.3f}  "
        f"{row['explanation']}"
    )

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for kind in directions:
    rows = [r for r in sweep if r["kind"] == kind]
    axes[0].plot(alphas, [r["cos_to_direction"] for r in rows], marker="o", label=kind)
    axes[1].plot(alphas, [r["logit_diff_last"] for r in rows], marker="o", label=kind)
axes[0].set(
    xlabel="alpha",
    ylabel="cos(steered residual, direction)",
    title=f"layer {nla.layer}, position {p}",
)
axes[1].set(
    xlabel="alpha",
    ylabel=f"logit({CLEAN_WORD}) - logit({CORRUPT_WORD}), last token",
    title="behaviour",
)
axes[0].legend()
fig.tight_layout()
save_figure(fig, "04_steering.png")

# %% [markdown]
# ## Steering by editing an explanation
#
# Take the explanation of the residual, edit the words, and move the residual
# by the difference of the two reconstructions (rescaled to `||h||`):
# `h + alpha * (AR(edited) - AR(original))`. Without a model this is vector
# arithmetic; with `model=` and `inputs=` the delta is added at layer `K`
# during a real forward pass, and the residual the model actually carries is
# explained. At the edited position the two agree by construction (the edit is
# made at the layer the NLA reads); the forward pass also gives you the steered
# model's logits (`result.run.logits`) and every later position.

# %%
original = nla.explain(h[p])[0].text
edited = re.sub(rf"\b{CLEAN_WORD}\b", CORRUPT_WORD, original, flags=re.IGNORECASE)
if edited == original:  # the explanation does not name the word: describe the target instead
    edited = describe(CORRUPT_WORD)
print(f"original: {original.splitlines()[0][:90]!r}\nedited  : {edited.splitlines()[0][:90]!r}")

offline = steer_by_edit(nla, h[p], original, edited, alphas=(0.5, 1.0, 2.0))
live = steer_by_edit(
    nla,
    h[p],
    original,
    edited,
    alphas=(0.5, 1.0, 2.0),
    model=model,
    inputs=CLEAN_TEXT,
    position=p,
    **subject.kwargs,
)
for name, results in (("vector arithmetic", offline), ("in the forward pass", live)):
    print(name)
    for r in results:
        moved = float(torch.cosine_similarity(r.vector.float(), h[p].float().cpu(), dim=0))
        behaviour = ""
        if r.run is not None:  # the steered forward pass: what did the model predict at the end?
            last = r.run.logits[0, -1]
            behaviour = f" logit({CLEAN_WORD})-logit({CORRUPT_WORD})={float(last[answers[0]] - last[answers[1]]):+.3f}"
        print(
            f"   alpha={r.alpha:<4g} cos(new, h)={moved:.3f} fve_nrm={r.explanation.fve_nrm:+.3f}{behaviour}  "
            f"{r.explanation.text.splitlines()[0][:70]}"
        )
