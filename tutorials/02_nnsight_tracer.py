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
# # 02 · nnsight: capture and edit inside `model.trace(...)`, then explain
#
# nnsight lets you read and write any module's output inside a
# `with model.trace(inputs):` block. nla_lens gives you the one residual an NLA
# reads, `nla.residual(model)` (decoder block `K`'s output, in the plain or the
# Gemma-3 multimodal layout), so you can save it, explain it, and explain what
# your own edits did to it.
#
# Offline this runs on the toy pair; `NLA_LENS_REAL=1` runs it on Gemma-3-12B.

# %%
import pandas as pd
import torch
from _setup import (
    CLEAN_TEXT,
    CLEAN_WORD,
    CORRUPT_WORD,
    REAL,
    banner,
    check_known_words,
    expect,
    load_pair,
    load_subject,
    save_html,
    single_token_id,
)

from nla_lens.subjects import layer_envoy

banner("02 nnsight tracer")
torch.set_grad_enabled(False)  # inference only: traces keep no autograd graph
pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 20)
pd.set_option("display.max_colwidth", 60)
nla = load_pair()
subject = load_subject("nnsight")
model, tok = subject.model, subject.tokenizer
check_known_words(tok, CLEAN_TEXT)
print(type(model).__name__, "wrapping", type(subject.hf).__name__, "| NLA layer", nla.layer)

# %% [markdown]
# ## Save the layer-K residual inside a trace
#
# `nla.residual(model)` must be read inside the trace; `.save()` keeps it after
# the block. It is the same tensor `nla.capture` returns.

# %%
with model.trace(CLEAN_TEXT):
    h = nla.residual(model).save()

tokens = tok.convert_ids_to_tokens(tok(CLEAN_TEXT)["input_ids"])
print("saved residual:", tuple(h.shape))
same = nla.capture(model, CLEAN_TEXT)
print(f"max |trace - nla.capture| = {float((h - same).abs().max()):.2e}")
expect("the traced residual is the one nla.capture returns", float((h - same).abs().max()) < 1e-5)

pos = tokens.index(tok.convert_ids_to_tokens(single_token_id(tok, CLEAN_WORD)))
watch = [
    pos,
    len(tokens) - 1,
]  # the animal's token, and the last token (where the answer is predicted)
for p, e in zip(watch, nla.explain(h[0, watch]), strict=True):
    print(f"[{p:>2}] {tokens[p]!r:<10} fve_nrm={e.fve_nrm:.3f}  {e.text.splitlines()[0][:90]}")

# %% [markdown]
# ## Edit an earlier layer inside the trace, read layer K after it
#
# nnsight runs modules in order, so edit first, read `K` after. Here we take the
# residual of a *donor* word at an early layer `E` (a quarter of the way to `K`)
# and write it over the animal's position in the clean prompt. What does layer
# `K` say at that position now, and at the last position?

# %%
E = nla.layer // 4
donor_text = CLEAN_TEXT.replace(CLEAN_WORD, CORRUPT_WORD)
with model.trace(donor_text):
    donor = layer_envoy(model, E).output[0, pos].save()

with model.trace(CLEAN_TEXT):
    layer_envoy(model, E).output[0, pos] = donor
    h_edit = nla.residual(model).save()
    logits_edit = model.output.logits[0, -1].save()

print(
    f"edited block {E}'s output at position {pos} ({CLEAN_WORD!r} -> the residual of {CORRUPT_WORD!r})"
)
edited = nla.explain(h_edit[0, watch])
for p, e in zip(watch, edited, strict=True):
    moved = float((h_edit[0, p] - h[0, p]).norm() / h[0, p].norm())
    print(
        f"[{p:>2}] {tokens[p]!r:<10} ||dh||/||h||={moved:.2f} fve_nrm={e.fve_nrm:.3f}  {e.text.splitlines()[-1][:80]}"
    )
if not REAL:
    from nla_lens.toy import read_explanation

    expect(f"layer K at the edited position now reads {CORRUPT_WORD!r}",
           read_explanation(edited[0].text).word == CORRUPT_WORD)  # fmt: skip

# %% [markdown]
# ## The same, as one call: `nla.explain_run(model, inputs, intervene=...)`
#
# `intervene(model)` is called inside the trace before layer `K` is read.
# `explain_run` returns an `ExplainedRun` (a DataFrame with `.to_frame()`, the
# subject's logits, and `.diff(other)`, which scores each run's explanation
# against the *other* run's vector: a cross-fit).


# %%
def write_donor(vec: torch.Tensor, layer: int, position: int):
    def intervene(model) -> None:
        layer_envoy(model, layer).output[0, position] = vec

    return intervene


clean_run = nla.explain_run(model, CLEAN_TEXT, positions=watch, label="clean")
edit_run = nla.explain_run(
    model, CLEAN_TEXT, positions=watch, intervene=write_donor(donor, E, pos), label="edited"
)
print(
    pd.concat([clean_run.to_frame(), edit_run.to_frame()])[
        ["run", "position", "token", "fve_nrm", "explanation"]
    ]
)
diff = clean_run.diff(edit_run)
print(
    diff.to_frame()[
        [
            "position",
            "same_text",
            "self_fve_nrm_a",
            "self_fve_nrm_b",
            "cross_fve_nrm_a_on_b",
            "cross_fve_nrm_b_on_a",
        ]
    ]
)
print({k: None if v is None else round(v, 3) for k, v in diff.summary().items()})
row = diff.to_frame().iloc[0]
expect("the clean words fit the edited vector worse than their own",
       row["cross_fve_nrm_a_on_b"] < row["self_fve_nrm_a"])  # fmt: skip

# %% [markdown]
# A low cross-fit (`cross_fve_nrm_a_on_b`: the clean explanation scored against
# the edited vector) says the words of one run do not describe the other run's
# vector: the edit changed what layer `K` carries, not just the wording.
#
# ## The research-notebook pattern
#
# A loop over candidate edits, one `explain_run` each, every result in one
# DataFrame with the behavioural effect next to it (here: the logit of the
# clean word minus the donor word at the last position, edited and unedited).
# The table is also written as HTML.

# %%
donors = [CORRUPT_WORD, "tiger", "queen", "apple"]
clean_id = single_token_id(tok, CLEAN_WORD)
rows = []
for word in donors:
    text = CLEAN_TEXT.replace(CLEAN_WORD, word)
    check_known_words(tok, text)
    word_id = single_token_id(tok, word)
    for layer in sorted({0, E, nla.layer}):
        with model.trace(text):
            vec = layer_envoy(model, layer).output[0, pos].save()
        run = nla.explain_run(
            model, CLEAN_TEXT, positions=watch, intervene=write_donor(vec, layer, pos), label=word
        )
        frame = run.to_frame()
        frame["donor"], frame["edited_layer"] = word, layer
        frame["logit_clean_minus_donor"] = float(
            run.logits[0, -1, clean_id] - run.logits[0, -1, word_id]
        )
        frame["unedited"] = float(
            clean_run.logits[0, -1, clean_id] - clean_run.logits[0, -1, word_id]
        )
        rows.append(frame)
table = pd.concat(rows, ignore_index=True)
at_word = table[table.position == pos]
print(
    at_word[
        ["donor", "edited_layer", "fve_nrm", "logit_clean_minus_donor", "unedited", "explanation"]
    ].to_string(index=False)
)

save_html(table.drop(columns=["batch"]).to_html(index=False), "02_donor_sweep.html")
if not REAL:
    reads = [read_explanation(t).word for t in at_word.explanation]
    expect("every edit at a layer <= K makes layer K read the donor word there",
           reads == list(at_word.donor))  # fmt: skip

# %% [markdown]
# Read it per donor: an edit at a layer `<= K` at the word's position changes
# what layer `K` carries there, and the explanation follows the donor; the
# logit column says whether the model's prediction at the end moved with it.
# The toy subject is trained (on an in-context recall task and generic text), but
# this sentence is not its task, so its logits here are those of a tiny model on
# generic text: compare `logit_clean_minus_donor` with `unedited` row by row
# rather than reading the values as a finding. With Gemma-3-12B the same table is
# a small causal experiment.
