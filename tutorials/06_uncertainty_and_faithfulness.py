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
# # 06 · Uncertainty, difference explanations, and faithfulness checks
#
# * **uncertainty**: draw k explanations per vector at temperature 1, score each
#   with the AR, and see whether they agree (`hedge` flags the ones that do not);
#   `select="best"` keeps the sample the AR reconstructs best (best-of-k);
# * **intervals**: with samples in both runs, `ExplainedRun.diff` gives a
#   bootstrap interval per position, so a real change stands out from sampling noise;
# * **difference explanations**: explain `a - b` (what a steering direction or a
#   patch changed);
# * **faithfulness**: which line of an explanation carries the information, and
#   does the score survive shuffling, swapping in unrelated words, or a paraphrase?

# %%
import torch
from _setup import (
    CLEAN_TEXT,
    CLEAN_WORD,
    MAX_NEW_TOKENS,
    banner,
    check_known_words,
    describe,
    load_pair,
    load_subject,
    save_html,
    single_token_id,
)

from nla_lens.experiments.steering import add_direction

banner("06 uncertainty and faithfulness")
nla = load_pair()
subject = load_subject("hf")
model, tok = subject.model, subject.tokenizer
check_known_words(tok, CLEAN_TEXT)
h = nla.capture(model, CLEAN_TEXT, **subject.kwargs)[0]  # [seq, d_model]
p = tok(CLEAN_TEXT)["input_ids"].index(single_token_id(tok, CLEAN_WORD))

# %% [markdown]
# ## k samples per vector
#
# Real residuals of the toy subject read the same at every sample. A blend of
# two residuals' directions is ambiguous: its samples disagree, its `agreement`
# (how well the samples' AR reconstructions predict one another, on the fve_nrm
# scale) drops, and `hedge` is set.

# %%
unit = h / h.norm(dim=-1, keepdim=True)
blends = unit[p : p + 3] + unit[p + 1 : p + 4]
vectors = torch.cat([h[p : p + 3], blends])
sampled = nla.explain_samples(vectors, samples=6, seed=0, max_new_tokens=MAX_NEW_TOKENS)
print(
    sampled.to_frame()[["index", "best", "best_fve_nrm", "agreement", "n_distinct", "hedge"]]
    .round(3)
    .to_string(index=False)
)
best = nla.explain(vectors, samples=6, seed=0, select="best", max_new_tokens=MAX_NEW_TOKENS)
print("best-of-6:", [e.text.splitlines()[0][:40] for e in best])
save_html(sampled._repr_html_(), "06_samples.html")

# %% [markdown]
# ## Steering, read as a difference, with intervals
#
# Steer the animal's position toward a description, explain both runs with 4
# samples each, and diff them. `explanation_b_minus_a` reads the steered
# residual minus the plain one; `delta_fve_nrm_on_b` is how much better the
# steered run's own words fit its residual than the plain run's words do, with a
# 90% bootstrap interval over the samples (`changed`: the interval clears 0).

# %%
target = "house"
direction = nla.steering_vector(describe(target), reference=h[1:])
positions = [p, p + 2]
kw = dict(positions=positions, samples=4, temperature=1.0, seed=0, max_new_tokens=MAX_NEW_TOKENS)
plain = nla.explain_run(model, CLEAN_TEXT, label="plain", **kw, **subject.kwargs)
steered = nla.explain_run(
    model,
    CLEAN_TEXT,
    label="steered",
    edits=add_direction(direction, 2.0, nla.layer, positions=p),
    **kw,
    **subject.kwargs,
)
diff = plain.diff(steered, explain_difference=True)
cols = ["position", "token_a", "explanation_a", "explanation_b", "explanation_b_minus_a"]
cols += ["delta_fve_nrm_on_b", "delta_fve_nrm_on_b_lo", "delta_fve_nrm_on_b_hi", "changed"]
print(diff.to_frame()[cols].round(3).to_string(index=False))
save_html(diff._repr_html_(), "06_diff.html")

d = nla.explain_difference(h[p] + direction, h[p], max_new_tokens=MAX_NEW_TOKENS)
print("explain_difference(h + direction, h):", d.texts[0])

# %% [markdown]
# ## Faithfulness: which line carries it, and do the words matter?
#
# The toy AV writes one line per explanation, so we build two-line ones: the
# vector's own explanation and another token's, in both orders. The prefix
# scores show which line carries the information; the swap check replaces a line
# with one from an unrelated explanation; the paraphrase check uses our own
# rewording function.

# %%
own = [e.text for e in nla.explain(h[p : p + 3], max_new_tokens=MAX_NEW_TOKENS)]
other = own[1:] + own[:1]  # each line next to another token's explanation
texts = [f"{o}\n{u}" for o, u in zip(own, other, strict=True)]
texts += [f"{u}\n{o}" for o, u in zip(own, other, strict=True)]
report = nla.faithfulness(
    texts,
    torch.cat([h[p : p + 3], h[p : p + 3]]),
    paraphrase=lambda t: t.replace("token :", "the token is"),
)
print(
    report.to_frame()[
        ["explanation", "prefix_scores", "carrier", "score", "shuffled_score", "swapped_score",
         "paraphrased_score"]
    ].to_string(index=False)
)  # fmt: skip
save_html(report._repr_html_(), "06_faithfulness.html")
