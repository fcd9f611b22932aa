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
# * the explanations say so: at the last position the AV reads `next : lake`
#   exactly in the cells that carry the answer.
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
    load_pair,
    load_subject,
    save_figure,
    save_html,
    show,
    single_token_id,
)

from nla_lens import activation_patching, patching_html, plot_patching

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
words = bridge.tokenizer.convert_ids_to_tokens(list(answers))
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
# `activation_patching` runs one patched forward per cell and explains every
# patched layer-`K` residual in one batched AV call. With `answer_tokens` the
# metric is the **normalised logit difference**: 1 = the clean run's answer
# margin, 0 = the corrupted run's. `downstream_of_k` marks cells patched after
# layer `K`, whose layer-`K` explanation cannot change.

# %%
n_pos = clean_ids.shape[1]
positions = sorted({source, control, n_pos - 1})
layers = list(range(bridge.cfg.n_layers))
df = activation_patching(
    nla, bridge, clean_ids, corrupt_ids, layers=layers, positions=positions,
    answer_tokens=answers, max_new_tokens=MAX_NEW_TOKENS,
)  # fmt: skip
cols = ["layer", "position", "token", "metric", "logit_diff", "downstream_of_k", "explanation"]
show(df[cols].round(3))

# %% [markdown]
# ## The heatmap: structure, not noise
#
# Colour is centred at 0 and anchored to [-1, 1] for the normalised metric: dark
# red (1) is a patch that left the clean answer alone, white (0) one that moved it
# all the way to the corrupted answer (blue would overshoot). Noise never fills
# the scale. Each cell carries the explanation of the patched layer-`K` residual
# (`*` = patched after `K`).

# %%
save_figure(plot_patching(df), "03_patching_metric.png")
save_html(patching_html(df), "03_patching.html")

# %% [markdown]
# ## What the patch moved, in words
#
# The toy AV writes `token : <word> ; next : <prediction>`. Two kinds of cell
# mention the corrupted place:
#
# * at the changed word, every layer up to `K` reads `token : <corrupted place>`:
#   the patch took. But only the early layers move the answer: by layer 2 the
#   place has already been copied to the end, so swapping the word there is too
#   late (metric back near 1). The explanation and the metric together say
#   *when* the information moves;
# * at the last position, layer `K` reads `next : <corrupted place>`: that is the
#   residual the answer is read from. Patching it after `K` moves the answer too,
#   but its layer-`K` explanation cannot change (`downstream_of_k`).

# %%
at_source = df[(df.position == source) & ~df.downstream_of_k]
at_control = df[(df.position == control) & ~df.downstream_of_k]
print(
    f"patching the changed word (position {source}): metric per layer {at_source.metric.round(2).tolist()}"
)
print(
    f"patching an unrelated word (position {control}): metric per layer {at_control.metric.round(2).tolist()}"
)
mentions = df[df.explanation.str.contains(words[1], regex=False)]
show(mentions[["layer", "position", "token", "metric", "explanation"]].round(3))
last = df[df.position == n_pos - 1][
    ["layer", "metric", "explanation", "clean_explanation", "corrupt_explanation"]
]
show(last.round(3))
recovery = 1 - at_source.metric.min()
print(f"recovery of the clean-vs-corrupted difference by the best patch of the changed word: "
      f"{recovery:.0%}; by the best patch of the unrelated word: {1 - at_control.metric.min():.0%}")  # fmt: skip

# %% [markdown]
# Read it like this: the answer leaves the place word's residual early (patching
# that word at layers 0-1 hands the corrupted place to the last position), the
# unrelated word carries nothing the answer needs (its row stays at 1), and the
# answer sits at the last position by layer `K`, where the AV reads it as
# `next : ...`. On Gemma-3-12B the same table shows where along the stream a fact
# is copied to the answer position, and the explanations say what each patched
# residual carries.
