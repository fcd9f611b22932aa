"""The public :class:`NLA`: the core pair plus the notebook methods, each delegating down.

``NLA`` is :class:`~nla_lens.core.pair.NLAPair` (load, ``explain``, ``score``,
``reconstruct``, provenance) with the experiments as methods:
``nla.capture``, ``nla.residual``, ``nla.explain_run``, ``nla.transcript``,
``nla.search``, ``nla.steering_vector``, ``nla.steer_by_edit``,
``nla.activation_patching``, ``nla.explain_samples`` (and ``explain(select="best")``),
``nla.explain_difference``, ``nla.faithfulness``, ``nla.explain_features``, ``nla.explore``. Each is a thin call to the function of the same
job in :mod:`nla_lens.experiments` or :mod:`nla_lens.subjects`, which take the
pair as their first argument; nothing below this module imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from jaxtyping import Float
from torch import Tensor

from .core.explanation import Explanation, Explanations
from .core.pair import ExplainCache, NLAPair
from .core.sampling import Sampling
from .core.streaming import EventStream
from .errors import SamplingError
from .experiments import (
    DifferenceExplanation,
    ExplainedRun,
    FaithfulnessReport,
    FeatureExplanations,
    SampledExplanations,
    SearchHit,
    SteeringResult,
    Transcript,
    activation_patching,
    build_transcript,
    explain_difference,
    explain_features,
    explain_run,
    faithfulness_report,
    read_subject,
    sample_explanations,
    search,
    steer_by_edit,
    steering_vector,
)
from .experiments.inputs import read_rows
from .explore import explorer_widget, make_explorer, serve
from .subjects import CapturedResidual, Positions, SubjectInfo, as_subject, residual

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["NLA"]


class NLA(NLAPair):
    """A Natural Language Autoencoder pair reading layer ``K`` of a subject model.

    ``nla.explain(vectors)`` verbalizes vectors with the AV and, when an AR is
    loaded, scores each explanation by how well the AR reconstructs the vector
    from it (``mse_nrm``, ``cos``, and ``fve_nrm`` against a baseline). The
    other methods read a subject model (Hugging Face, TransformerBridge or
    nnsight) and attach explanations to runs, patching and steering.
    """

    def residual(self, model: Any) -> Any:
        """Inside an nnsight ``model.trace(...)``: the layer-K output (call ``.save()`` on it)."""
        return residual(model, self.layer)

    def check_subject(self, model: Any) -> SubjectInfo:
        """Refuse a subject that does not match the pair (d_model, layer range, base model)."""
        return as_subject(model).check(
            d_model=self.d_model, layer=self.layer, base_model=self.base_model
        )

    def capture(
        self, model: Any, inputs: Any, *, positions: Positions = None, **kwargs: Any
    ) -> Float[Tensor, "batch pos d_model"]:
        """The layer-K residual of a Hugging Face model, TransformerBridge or nnsight model.

        Text and chats are tokenized with the model's tokenizer and chat template
        (exactly one BOS); positions count over each row's real tokens (see
        :func:`nla_lens.subjects.capture_residual`). The result is a
        :class:`~nla_lens.subjects.CapturedResidual`: a tensor that also says which
        slots are real tokens (``.mask``) and where (``.positions``), so ``nla.explain``
        drops the pads of a padded batch (``positions=None`` keeps every column).
        """
        return CapturedResidual.of(
            read_subject(self, model, inputs, positions=positions, **kwargs)[1]
        )

    def transcript(self, model: Any, text_or_messages: Any, **kwargs: Any) -> Transcript:
        """Per-token transcript of a prompt (and optionally a generated reply); see
        :func:`nla_lens.experiments.build_transcript`."""
        return build_transcript(self, model, text_or_messages, **kwargs)

    def search(
        self, description: str, activations: Any, *, top_k: int = 5, centered: bool = False
    ) -> list[SearchHit]:
        """Where does the model represent ``description``? Rank captured positions by how
        closely their residual matches the AR's reconstruction of the description."""
        return search(self, description, activations, top_k=top_k, centered=centered)

    def explain_run(self, model: Any, inputs: Any, **kwargs: Any) -> ExplainedRun:
        """Run the subject once under an intervention and explain layer K; see
        :func:`nla_lens.experiments.explain_run`."""
        return explain_run(self, model, inputs, **kwargs)

    def steering_vector(self, description: str, **kwargs: Any) -> Float[Tensor, " d_model"]:
        """A layer-K steering direction for a description; see :func:`nla_lens.steering_vector`."""
        return steering_vector(self, description, **kwargs)

    def steer_by_edit(
        self, h: Any, explanation: str, edited: str, **kwargs: Any
    ) -> list[SteeringResult]:
        """Steer ``h`` toward an edited explanation; see :func:`nla_lens.steer_by_edit`."""
        return steer_by_edit(self, h, explanation, edited, **kwargs)

    def activation_patching(
        self, model: Any, clean: Any, corrupt: Any, **kwargs: Any
    ) -> pd.DataFrame:
        """Patch corrupted residuals into the clean run and explain each cell; see
        :func:`nla_lens.activation_patching`."""
        return activation_patching(self, model, clean, corrupt, **kwargs)

    def explore(
        self,
        model: Any = None,
        inputs: Any = None,
        *,
        serve_at: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Click through ``model``'s tokens of ``inputs`` (a prompt or chat) and watch each
        token's explanation stream in with its prefix scores, the baseline and the fit flag.

        Returns a notebook widget (anywidget; the explorer's web front end) whose clicks run
        here in the kernel on your model and its edits (``edits=``, ``fwd_hooks=``,
        ``intervene=``, ``hf_hooks=``). ``reply_tokens=N`` also reads a generated reply;
        ``patching=`` an ``activation_patching`` frame adds the patching grid;
        ``transcript=`` a Transcript; ``files=`` saved tables. ``serve_at="127.0.0.1"``
        serves it as a web page instead and returns the running server (``.url``).
        """
        explorer = make_explorer(self, model, inputs, **kwargs)
        if serve_at is not None:
            return serve(explorer, host=serve_at)
        return explorer_widget(explorer)

    # ---- uncertainty, differences, faithfulness, SAE latents ---------------------
    def explain(
        self,
        vectors: Any,
        *,
        sampling: Sampling | None = None,
        temperature: float | None = None,
        max_new_tokens: int | None = None,
        top_p: float | None = None,
        samples: int | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        score: bool = True,
        progress: bool | None = None,
        cache: ExplainCache | None = None,
        select: Literal["all", "best"] = "all",
        mask: Any = None,
    ) -> Explanations:
        """Explain vectors; see :meth:`NLAPair.explain` for the settings.

        Besides a ``[d]`` vector or ``[n, d]`` batch, takes a ``[batch, pos, d]``
        tensor (the frame keeps ``batch`` and ``position``), a TransformerLens
        ``ActivationCache`` (read at ``nla.hook_name``), or a pandas ``Series`` of
        vectors / ``DataFrame`` with an ``activation_vector`` column (the frame
        keeps the index as ``row``).

        Padding: ``mask=`` (the run's ``attention_mask``, ``[batch, pos]`` of 0/1, or the
        tokenizer's encoding holding it) says which slots of a ``[batch, pos, d]`` input
        (or cache) are real tokens; pad slots are dropped and ``position`` counts over
        each row's real tokens. ``nla.capture`` results carry their mask. Without one, a
        batch that looks padded raises :class:`~nla_lens.errors.PaddingError`, and any
        other batch of several rows carries a note (``.notes()``) that no mask was given.

        ``select="best"`` is best-of-k: ``samples`` explanations per vector (default 4,
        at temperature 1.0) decoded in one batch, all scored by the AR, and the one it
        reconstructs best returned (one per vector). ``nla.explain_samples`` keeps all
        k with their agreement.
        """
        settings: dict[str, Any] = dict(
            temperature=temperature, max_new_tokens=max_new_tokens, top_p=top_p,
            samples=samples, seed=seed, batch_size=batch_size,
        )  # fmt: skip
        read = read_rows(self, vectors, mask)
        rows, labels = read.vectors, read.labels
        if select == "best":
            if not score:
                raise SamplingError(
                    "select='best' ranks samples by their AR score; keep score=True."
                )
            best = sample_explanations(
                self, rows, sampling=sampling, progress=progress, cache=cache, **settings
            ).best
            return Explanations(
                best, labels, baseline_fit=self.baseline_fit(rows), input_notes=read.notes
            )
        if select != "all":
            raise SamplingError(f"select must be 'all' or 'best', got {select!r}.")
        out = super().explain(
            rows, sampling=sampling, score=score, progress=progress, cache=cache, **settings
        )
        out.labels = labels
        out.input_notes = list(read.notes)
        return out

    def explain_stream(
        self,
        vectors: Any,
        sampling: Sampling | None = None,
        stop: Any = None,
        batch_size: int | None = None,
        *,
        mask: Any = None,
        **settings: Any,
    ) -> EventStream:
        """Explain vectors as the AV writes; see :meth:`NLAPair.explain_stream`. Takes the
        inputs :meth:`explain` does, ``mask=`` included (rows are numbered as in its flat
        output: pads dropped). The returned stream's ``labels`` give each row's ``batch`` /
        ``position`` and its ``input_notes`` what ``explain`` would note of the input."""
        read = read_rows(self, vectors, mask)
        stream = super().explain_stream(read.vectors, sampling, stop, batch_size, **settings)
        stream.labels, stream.input_notes = read.labels, list(read.notes)
        return stream

    def explain_samples(self, vectors: Any, **kwargs: Any) -> SampledExplanations:
        """k explanations per vector (default 4 at temperature 1.0) with their AR scores,
        agreement and a ``hedge`` flag; see :func:`nla_lens.experiments.sample_explanations`."""
        return sample_explanations(self, vectors, **kwargs)

    def explain_difference(self, a: Any, b: Any, **kwargs: Any) -> DifferenceExplanation:
        """Explain ``a - b`` (the AV reads only its direction) and score it; see
        :func:`nla_lens.experiments.explain_difference`."""
        return explain_difference(self, a, b, **kwargs)

    def faithfulness(
        self,
        explanations: Sequence[Explanation | str],
        vectors: Any,
        *,
        paraphrase: Callable[[str], str] | None = None,
        **kwargs: Any,
    ) -> FaithfulnessReport:
        """Per-segment scores and shuffle / swap / paraphrase checks; see
        :func:`nla_lens.experiments.faithfulness_report`."""
        return faithfulness_report(self, explanations, vectors, paraphrase=paraphrase, **kwargs)

    def explain_features(
        self, sae: Any, latent_ids: Any = None, **kwargs: Any
    ) -> FeatureExplanations:
        """Explain SAE decoder rows ``W_dec[latent_ids]`` (a SAELens SAE, any object with
        ``W_dec [d_sae, d_model]``, or the matrix); see :func:`nla_lens.experiments.explain_features`."""
        return explain_features(self, sae, latent_ids, **kwargs)
