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
# # 03 · Activation patching with explanations (TransformerLens)
#
# Activation patching asks *where* the information behind an answer lives: run
# the clean prompt, overwrite one (layer, position) of the residual stream with
# the corrupted prompt's value, and watch the answer. nla_lens adds words: for
# every patched run it explains the layer-`K` residual at that position, so you
# can read *what* the patch moved, not only *how much*.
#
# The toy subject shipped with nla_lens has a known mechanism. It was trained on
# attribute recall:
#
#     the cat is in my house . the dog is in the river . the cat is in our   ->  house
#
# The answer is only in the context, at the place word of the queried fact; the
# model must move it to the last position. A corrupted prompt changes that one
# word (`house` -> `lake`), so the right answer becomes `lake`. What you should
# see below:
#
# * the subject answers the task right and confidently (a real effect to patch);
# * patching the **changed place word** at an early layer moves the answer almost
#   all the way to the corrupted one (normalised metric near 0), while patching an
#   **unrelated position** leaves it alone (near 1);
# * the words add what the metric cannot: each cell also explains the **readout**,
#   the answer's position (the last token) at layer `K` of the patched run, so a
#   cell says not only *how much* the answer moved but *to what*; and with a
#   corruption whose new answer differs from pair to pair, only the words tell
#   which place the answer moved to.
#
# Lines starting `[expect]` state what a run should show and whether it did.
#
# The bridge is booted *without* weight processing (NLAs read raw residuals).

# %%
import torch
from _setup import (
    CLEAN_TEXT,
    CLEAN_WORD,
    CORRUPT_TEXT,
    CORRUPT_WORD,
    MAX_NEW_TOKENS,
    REAL,
    banner,
    expect,
    load_pair,
    load_subject,
    save_figure,
    save_html,
    show,
    single_token_id,
)

from nla_lens import activation_patching, patching_html, plot_patching
from nla_lens.toy import read_explanation

banner("03 activation patching")
torch.set_grad_enabled(False)  # inference only
nla = load_pair()
subject = load_subject("transformer_lens")  # nla_lens.subjects.boot_bridge(hf_model, tokenizer)
bridge = subject.model
print(f"{type(bridge).__name__}: {bridge.cfg.n_layers} blocks, d_model {bridge.cfg.d_model}; "
      f"the pair reads {nla.hook_name}")  # fmt: skip

# %% [markdown]
# ## A clean / corrupted pair from the toy task
#
# `nla_lens.toy.tasks()` draws held-out pairs: the prompts, both answers as
# token ids, and the position (counted over real tokens, `<bos>` = 0) of the word
# that differs. On the released Gemma pair the tutorial uses a hand-written pair.

# %%
if REAL:
    clean, corrupt = CLEAN_TEXT, CORRUPT_TEXT
    answers = (
        single_token_id(bridge.tokenizer, CLEAN_WORD),
        single_token_id(bridge.tokenizer, CORRUPT_WORD),
    )
    toks = bridge.to_str_tokens(clean)
    source = next(
        i
        for i, (a, b) in enumerate(zip(toks, bridge.to_str_tokens(corrupt), strict=True))
        if a != b
    )
    control = source + 2
else:
    from nla_lens.toy import tasks

    task = tasks(1)[0]
    clean, corrupt = task.clean, task.corrupted
    answers = (task.clean_answer_id, task.corrupted_answer_id)
    source, control = task.position, task.control_position
words = [bridge.tokenizer.decode([int(a)]).strip() for a in answers]
print(f"clean:     {clean!r}\ncorrupted: {corrupt!r}")
print(f"answers: clean {words[0]!r}, corrupted {words[1]!r}; they differ at position {source}")

clean_ids, corrupt_ids = bridge.to_tokens(clean), bridge.to_tokens(corrupt)
for name, ids in (("clean", clean_ids), ("corrupted", corrupt_ids)):
    probs = bridge(ids)[0, -1].softmax(-1)
    top = int(probs.argmax())
    print(f"{name:>9}: p({words[0]})={probs[answers[0]]:.3f}  p({words[1]})={probs[answers[1]]:.3f}  "
          f"argmax {bridge.tokenizer.convert_ids_to_tokens(top)!r}")  # fmt: skip

# %% [markdown]
# The subject is right and confident on both prompts: the difference between
# them is a real effect, not noise, so patching has something to find.
#
# ## Patch every (layer, position)
#
# `activation_patching` runs one patched forward per cell and explains, in one
# batched AV call, two layer-`K` residuals of every patched run: at the patched
# position (`explanation`: what moved) and at the **readout**, the position the
# metric reads, by default each prompt's last token (`readout_explanation`: what
# it did to the answer). `answer` is the subject's top token there.
# `answer_tokens` takes the two answers as words (or ids); the metric is then the
# **normalised logit difference**, 1 = the clean run's answer margin, 0 = the
# corrupted run's. The frame says so itself: `metric_name`, and `df.attrs`.
# `effect` puts every metric on one scale: 0 = no effect, 1 = the patched run
# behaves like the corrupted run. `reader=read_explanation` tells the frame which
# continuation a toy explanation names (`readout_next`, `readout_changed`); on the
# released pair there is no such parser, and the readout explanation is prose to read.
# `downstream_of_k` marks cells patched after layer `K`, whose layer-`K`
# explanations cannot change.

# %%
n_pos = clean_ids.shape[1]
positions = sorted({source, control, n_pos - 1})
layers = list(range(bridge.cfg.n_layers))
reader = None if REAL else read_explanation
df = activation_patching(
    nla, bridge, clean_ids, corrupt_ids, layers=layers, positions=positions,
    answer_tokens=tuple(words), reader=reader, max_new_tokens=MAX_NEW_TOKENS,
)  # fmt: skip
print({k: df.attrs[k] for k in ("metric", "metric_meaning", "direction", "effect_meaning")})
cols = ["layer", "position", "token", "metric", "effect", "answer", "readout_next",
        "readout_changed", "downstream_of_k"]  # fmt: skip
show(df[cols].round(3))

# %% [markdown]
# ## The heatmap: structure, not noise
#
# Colour is the patch's `effect`, on a fixed scale for every metric: white = no
# effect, red = behaves like the corrupted run, blue = moved the other way. Noise
# never fills the scale. Each cell shows the metric, the start of the readout
# explanation and, on a second line, the patched site's (`*` = patched after `K`).
# The page shows the prompts, the answers and the legend above the grid, with the
# full explanations on hover.

# %%
save_figure(plot_patching(df), "03_patching_metric.png")
save_html(patching_html(df), "03_patching.html")

# %% [markdown]
# ## What the patch moved, and what it did
#
# At the changed place word, every layer up to `K` explains the corrupted place:
# the patch took, at every layer. The metric says only the early layers move the
# answer: by layer 2 the place has been copied to the end, so swapping the word
# there is too late (metric back near 1). The readout explanation says the same
# thing in words where the patch moved the answer all the way: it names the
# corrupted place. Where it moved it only part way (layer 1, effect about 0.8),
# the readout may name a third place, another fact's: the AV reads a residual
# that is a mix of the two runs, and a mix is not a sentence it was trained on.
# Read such a cell's words beside its metric, never instead of it.
# At the last position itself, layer `K` holds the answer; patching it after `K`
# moves the answer too, but no layer-`K` explanation can change (`downstream_of_k`).

# %%
upto_k = df[~df.downstream_of_k]
at_source = upto_k[upto_k.position == source]
at_control = upto_k[upto_k.position == control]
print(
    f"patching the changed word (position {source}): metric per layer {at_source.metric.round(2).tolist()}"
)
print(
    f"patching an unrelated word (position {control}): metric per layer {at_control.metric.round(2).tolist()}"
)
show(df[df.position == n_pos - 1][["layer", "metric", "answer", "readout_explanation",
                                   "clean_readout_explanation"]].round(3))  # fmt: skip
recovery = 1 - at_source.metric.min()
print(f"recovery of the clean-vs-corrupted difference by the best patch of the changed word: "
      f"{recovery:.0%}; by the best patch of the unrelated word: {1 - at_control.metric.min():.0%}")  # fmt: skip
if not REAL:
    moved, kept = upto_k[upto_k.effect >= 0.8], upto_k[upto_k.effect <= 0.2]
    expect("patching the changed word at layer 0 moves the answer (effect >= 0.8)",
           bool(at_source[at_source.layer == 0].effect.ge(0.8).all()))  # fmt: skip
    expect("patching the unrelated word has no effect (|effect| <= 0.2 at every layer)",
           bool(at_control.effect.abs().le(0.2).all()))  # fmt: skip
    full = upto_k[upto_k.effect >= 0.95]
    expect("where the answer moved all the way (effect >= 0.95), the readout names the corrupted answer",
           len(full) > 0 and bool((full.readout_next == words[1]).all()))  # fmt: skip
    expect("where it moved (effect >= 0.8), the readout names it in most cells",
           bool((moved.readout_next == words[1]).mean() >= 0.6))  # fmt: skip
    expect("where it did not, the readout names the clean answer",
           bool((kept.readout_next == words[0]).mean() >= 0.8))  # fmt: skip

# %% [markdown]
# ## Denoising: the other direction, the same columns
#
# `direction="denoising"` patches the clean run into the corrupted one. `effect`
# keeps its meaning (0 = no effect, 1 = behaves like the *donor*, now the clean
# run), so the mechanism's cells are red in both directions.

# %%
den = activation_patching(
    nla, bridge, clean_ids, corrupt_ids, layers=layers, positions=positions,
    answer_tokens=tuple(words), reader=reader, direction="denoising",
    max_new_tokens=MAX_NEW_TOKENS,
)  # fmt: skip
both = df.merge(den, on=["layer", "position"], suffixes=("_noising", "_denoising"))
show(both[["layer", "position", "effect_noising", "effect_denoising", "readout_next_noising",
           "readout_next_denoising"]].round(2))  # fmt: skip
mech = both[both.effect_noising >= 0.5]
if not REAL:
    expect("noising and denoising agree in sign at the mechanism's cells",
           bool((mech.effect_denoising > 0).all()) and len(mech) > 0)  # fmt: skip

# %% [markdown]
# ## Where only the words tell
#
# A different corruption: keep the facts, and ask about *another* animal of them
# (`tasks(corruption="entity")`). The corrupted answer is then another fact's
# place, a different one from pair to pair. Without `answer_tokens` the metric is
# KL to the clean run: it says the answer changed, and by how much, but not to
# what. The readout explanation names the new answer. What you should see: in
# each pair, patching the query's animal (position -4) at layer 0, or the last
# position at layer `K`, changes the answer; the rows' KL says only "changed",
# while `readout_next` names each pair's new place, which matches `answer`.

# %%
if not REAL:
    from nla_lens.toy import tasks

    pairs = tasks(4, corruption="entity")
    ent = activation_patching(
        nla, bridge, [t.clean for t in pairs], [t.corrupted for t in pairs],
        layers=[0, 1, nla.layer], positions=[-4, -1], reader=reader, max_new_tokens=MAX_NEW_TOKENS,
    )  # fmt: skip
    print("metric:", ent.attrs["metric"], "-", ent.attrs["metric_meaning"])
    changed = ent[(ent.effect >= 0.5) & ~ent.downstream_of_k]
    show(
        changed[["batch", "layer", "token", "metric", "effect", "answer", "readout_next"]].round(2)
    )
    expect("the changed answers are different places (the metric alone cannot say which)",
           changed.answer.nunique() >= 2)  # fmt: skip
    expect("the readout explanation names the new answer in most changed cells",
           bool((changed.readout_next == changed.answer.str.strip()).mean() >= 0.7))  # fmt: skip

# %% [markdown]
# Read it like this: the answer leaves the place word's residual early (patching
# that word at layers 0-1 hands the corrupted place to the last position), the
# unrelated word carries nothing the answer needs (its effect stays at 0), and the
# answer sits at the last position by layer `K`, where the readout explanation
# names it. On Gemma-3-12B the same table shows where along the stream a fact is
# copied to the answer position, and the readout explanations say, in prose, what
# the answer position holds after each patch.
