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

import matplotlib.pyplot as plt
import pandas as pd
from _setup import (
    CHAT,
    CLEAN_TEXT,
    CLEAN_WORD,
    CORRUPT_WORD,
    MAX_NEW_TOKENS,
    REAL,
    banner,
    check_known_words,
    describe,
    expect,
    load_pair,
    load_subject,
    save_figure,
    save_html,
    show,
    single_token_id,
)

from nla_lens import add_direction, steered_generate

banner("04 transcripts and steering")
nla = load_pair()
subject = load_subject("hf")
model, tok = subject.model, subject.tokenizer
check_known_words(tok, CHAT[0]["content"], CLEAN_TEXT)

# %% [markdown]
# ## A per-token transcript, with a reply
#
# `reply_tokens=3` lets the subject answer first (greedy), then reads the
# prompt and the reply in one ordinary forward pass. `max_new_tokens` caps each
# explanation (see `_setup.MAX_NEW_TOKENS`); an explanation cut by the cap is
# marked truncated. A string is read as plain text (`chat=True` would put it in
# the chat template, as `nla-lens transcript --chat` does; both default to plain).
# On Gemma-3-12B the tutorial reads a chat. The toy subject was trained on plain
# text, not chats (in the chat template it ends its turn at once), so on the toy
# the transcript reads a task prompt, and the reply is the subject's answer.

# %%
from nla_lens.toy import tasks

task = tasks(1)[0]
prompt = CHAT if REAL else task.clean
transcript = nla.transcript(
    model, prompt, reply_tokens=3, max_new_tokens=MAX_NEW_TOKENS, **subject.kwargs
)
reply = transcript.meta["reply"]
print("reply:", repr(reply))
if not REAL:
    expect(f"the reply starts with the task's answer {task.clean_answer!r}",
           reply.strip().startswith(task.clean_answer))  # fmt: skip
print(transcript.to_text())

save_html(transcript.to_html(), "04_transcript.html")

# %% [markdown]
# As a DataFrame: one row per (position, sample). The flags mark the positions
# known to be noisy *on the released models* (the first 10 tokens, BOS, outlier
# norms: Gemma's BOS residual is ~10x the others). On the toy the flagged early
# positions score *better*, not worse, and that is not a contradiction: the toy
# AV's explanation names the token and the next token, which is nearly all an
# early residual holds; later positions also carry the facts read so far, which
# the AR cannot rebuild from those words. Read the flags as "do not trust this
# position on a real model", not as a prediction of the toy's scores.

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

# What you should see: describing the task's answer as the next token, the top
# hit is the prompt's last position, where the subject is about to say it.

# %%
query = describe(CLEAN_WORD if REAL else task.clean_answer)
print(f"query: {query!r}")
for centered in (False, True):
    hits = nla.search(query, transcript, top_k=3, centered=centered)
    print(f"centered={centered}:")
    for h in hits:
        print(
            f"   #{h.rank} pos {h.position:>2} {h.token!r:<10} score={h.score:.3f}  {h.explanation.splitlines()[0][:70]}"
        )
last_prompt = max(e.position for e in transcript.entries if e.section == "prompt")
top = nla.search(query, transcript, top_k=1)[0]
if not REAL:
    expect(
        f"the top hit is the prompt's last position ({last_prompt})", top.position == last_prompt
    )

# %% [markdown]
# ## Steering by description, on the task
#
# `nla.steering_vector(description)` is the AR's reconstruction of the
# description, unit-normalised and scaled to the typical residual norm (the AV's
# injection scale). `add_direction(direction, alpha, layer, positions=-1)` is an
# edit for any framework; `positions=-1` is each prompt's own last token,
# whatever the padding.
#
# On the toy task the last position's layer-`K` residual is where the answer is
# read from, and the AV describes it as `next : <place>`. Describe a place the
# prompt never mentions, add the direction there at `alpha = 1` (no more than a
# typical residual norm), and the subject's answer should change to it. What you
# should see: the steered run's explanation reads `next : <target>`, and the
# answer follows in most task prompts.

# %%
if REAL:
    prompts = [(CLEAN_TEXT, CLEAN_WORD, CORRUPT_WORD)]
else:
    from nla_lens.toy import tasks

    prompts = [(t.clean, t.clean_answer, t.corrupted_answer) for t in tasks(16)]
alpha = 1.0
rows = []
for text, answer, target in prompts:
    direction = nla.steering_vector(describe(target))
    steer = add_direction(direction, alpha, nla.layer, positions=-1)
    plain = nla.explain_run(
        model, text, positions=[-1], label="plain", max_new_tokens=MAX_NEW_TOKENS, **subject.kwargs
    )
    steered = nla.explain_run(
        model,
        text,
        positions=[-1],
        label="steered",
        edits=steer,
        max_new_tokens=MAX_NEW_TOKENS,
        **subject.kwargs,
    )
    top = tok.decode([int(steered.logits[0, -1].argmax())]).strip()
    rows.append({"answer": answer, "target": target, "steered answer": top, "success": top == target,
                 "plain explanation": plain.texts[0], "steered explanation": steered.texts[0]})  # fmt: skip
table = pd.DataFrame(rows)
show(table)
print(f"steering by description at alpha={alpha}: the answer became the target in "
      f"{table.success.mean():.0%} of {len(table)} task prompts")  # fmt: skip
if not REAL:
    expect("the answer becomes the target in >= 80% of task prompts", table.success.mean() >= 0.8)

# %% [markdown]
# One prompt in detail: the probability of the original and the target answer as
# alpha grows. The direction's norm is the typical residual norm, so alpha = 1
# adds one typical residual's worth.

# %%
text, answer, target = prompts[0]
direction = nla.steering_vector(describe(target))
ids_ans = [single_token_id(tok, answer), single_token_id(tok, target)]
alphas = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5]
probs = []
for a in alphas:
    run = nla.explain_run(model, text, positions=[-1], edits=add_direction(direction, a, nla.layer, positions=-1),
                          max_new_tokens=MAX_NEW_TOKENS, **subject.kwargs)  # fmt: skip
    p_all = run.logits[0, -1].softmax(-1)
    probs.append((float(p_all[ids_ans[0]]), float(p_all[ids_ans[1]]), run.texts[0]))
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(alphas, [x[0] for x in probs], marker="o", label=f"p({answer}) (the prompt's answer)")
ax.plot(alphas, [x[1] for x in probs], marker="o", label=f"p({target}) (described)")
ax.set(
    xlabel="alpha",
    ylabel="next-token probability",
    title=f"steering toward {describe(target)!r} at layer {nla.layer}",
)
ax.legend()
fig.tight_layout()
save_figure(fig, "04_steering.png")
for a, (pa, pt, e) in zip(alphas, probs, strict=True):
    print(f"alpha={a:<5g} p({answer})={pa:.3f} p({target})={pt:.3f}  {e}")

# %% [markdown]
# ## Steering by editing an explanation
#
# Take the explanation of the last position's residual, edit its `next :` part,
# and move the residual by the difference of the two reconstructions (rescaled to
# `||h||`): `h + alpha * (AR(edited) - AR(original))`. With `model=` and `inputs=`
# the delta is added during a real forward pass and the residual the model then
# carries is explained, so you see both the words and the behaviour.

# Each result holds the subject's answer before and after the edit, the
# explanation before it and after it, and (with `reader=`, here the toy's
# `read_explanation`) whether the steered explanation names the answer. Where the
# two part ways, `r.note` says so. What you should see: at alpha 1 the answer is
# the target and the words name it; at alpha 0.5 the edit can be half-way, and
# the answer may move while the residual's words still name another place (or
# the reverse): that row's note says they disagree.

# %%
from nla_lens.toy import read_explanation

h = nla.capture(model, text, positions=[-1], **subject.kwargs)[0, 0]
original = nla.explain(h, max_new_tokens=MAX_NEW_TOKENS)[0].text
edited = describe(target)
print(f"original: {original!r}\nedited  : {edited!r}")
live = nla.steer_by_edit(h, original, edited, alphas=(0.5, 1.0), model=model, inputs=text,
                         position=-1, reader=None if REAL else read_explanation,
                         max_new_tokens=MAX_NEW_TOKENS, **subject.kwargs)  # fmt: skip
for r in live:
    print(r.note)
if not REAL:
    full = live[-1]
    expect(f"at alpha 1 the answer is {target!r} and the words agree",
           (full.answer or "").strip() == target and bool(full.agrees))  # fmt: skip

# %% [markdown]
# And a steered generation: `steered_generate` adds the direction at every
# position while the subject writes (the same tokens through Hugging Face,
# TransformerLens or nnsight). What you should see: at alpha 0 the plain
# continuation (the answer, then the next fact's start); at alpha 1 the target
# word over and over, since every new position is pushed toward "the next token
# is the target", its own included. That repetition is the steering working, not
# a fault.

# %%
for a in (0.0, 1.0):
    gen = steered_generate(model, text, direction, a, nla.layer, max_new_tokens=4, tokenizer=tok)
    print(f"alpha={a:g}: {gen.texts[0]!r}")
