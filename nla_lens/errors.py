"""The errors nla_lens raises on bad input.

Every error derives from :class:`NLAError`; each message says what was wrong,
what was expected and the likely fix.
"""

from __future__ import annotations

__all__ = [
    "AnswerTokenError",
    "BackendError",
    "CaptureError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "DescriptionError",
    "DeviceError",
    "ExplorerError",
    "ExportError",
    "FeatureError",
    "IncompleteResultsError",
    "InjectionError",
    "JobMismatchError",
    "MissingExtraError",
    "MissingQuantizationBackendError",
    "MissingValueHeadError",
    "NLAError",
    "PaddingError",
    "PairMismatchError",
    "QuantizationDeviceError",
    "QuantizationError",
    "RoleMismatchError",
    "SamplingError",
    "SidecarError",
    "StoreError",
    "SubjectMismatchError",
    "TokenizerDriftError",
    "UnknownQuantizationError",
    "UnsupportedArchitectureError",
    "VectorError",
]


class NLAError(Exception):
    """Base class of every error nla_lens raises on bad input."""


class CheckpointNotFoundError(NLAError, FileNotFoundError):
    """A checkpoint directory or hub id could not be found or downloaded."""


class CheckpointError(NLAError):
    """A checkpoint's files are present but unusable: malformed config.json, missing or
    corrupt tokenizer files, truncated or corrupt safetensors."""


class DeviceError(NLAError, ValueError):
    """A requested device is not available here, or a dtype is not a floating-point one."""


class SidecarError(NLAError):
    """``nla_meta.yaml`` is missing, malformed, or has unknown keys (strict mode)."""


class TokenizerDriftError(SidecarError):
    """The live tokenizer disagrees with the sidecar (marker id, neighbours, suffix)."""


class RoleMismatchError(NLAError):
    """An AV checkpoint was given where an AR is expected, or the reverse."""


class MissingValueHeadError(NLAError, FileNotFoundError):
    """An AR checkpoint lacks ``value_head.safetensors``."""


class UnsupportedArchitectureError(NLAError):
    """The checkpoint's architecture is not in nla_lens's architecture table."""


class VectorError(NLAError, ValueError):
    """A vector has the wrong width, or is NaN, infinite or all-zero."""


class PaddingError(VectorError):
    """A ``[batch, pos, d]`` input looks padded but came without the mask saying which slots
    are real tokens, or the mask given does not fit it."""


class SamplingError(NLAError, ValueError):
    """A sampling setting is out of range (temperature, top_p, max_new_tokens, seed, ...)."""


class PairMismatchError(NLAError):
    """The AV and AR of a pair disagree (d_model, layer)."""


class SubjectMismatchError(NLAError):
    """The subject model does not match the pair (d_model, layer range, base model)."""


class InjectionError(NLAError):
    """The prompt does not contain exactly one valid injection site."""


class CaptureError(NLAError):
    """The residual could not be captured from the given model or inputs."""


class AnswerTokenError(CaptureError, ValueError):
    """An answer token (``answer_tokens=``) is neither a token id nor a word that is one
    token of the subject's tokenizer."""


class DescriptionError(NLAError, ValueError):
    """A description to steer or search by is empty, or has words the AR's tokenizer does
    not know (it would read them as its unknown token)."""


class BackendError(NLAError):
    """A generation backend failed: a 4xx reply, a malformed reply, or exhausted retries."""


class StoreError(NLAError):
    """A cache or job-progress database cannot be used (a directory, not a database,
    corrupt, locked by another job, or the disk is full)."""


class JobMismatchError(NLAError):
    """A dataset job's saved progress belongs to other input, checkpoints or settings."""


class FeatureError(NLAError, ValueError):
    """An SAE or latent id cannot be explained (no ``W_dec [d_sae, d_model]``, wrong
    width, ids out of range, dead latents)."""


class ExportError(NLAError, ValueError):
    """Results cannot be exported in the requested layout (missing ids, bad fields)."""


class IncompleteResultsError(NLAError):
    """A long call failed part-way; ``.partial`` holds what was finished (in input order,
    the first ``len(partial)`` items), so no finished work is lost."""

    def __init__(self, message: str, partial: list) -> None:  # type: ignore[type-arg]
        super().__init__(message)
        self.partial = partial


class ExplorerError(NLAError, ValueError):
    """A bad setting or request for the explorer (``nla-lens explore``, ``nla.explore``)."""


class MissingExtraError(NLAError, ImportError):
    """An optional integration was used without its extra installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package {package!r}, which is not installed. "
            f"Install it with: pip install 'nla-lens[{extra}]'"
        )
        self.package = package
        self.extra = extra


class QuantizationError(NLAError):
    """Quantized loading cannot be done as asked (see the three cases below, or a
    quantization asked where nothing is loaded here, e.g. an AV decoding on a server)."""


class UnknownQuantizationError(QuantizationError, ValueError):
    """``quantization=`` is not one of the names nla_lens loads (``"int8"``, ``"4bit"``, ``"nf4"``,
    ``"torchao-int8"``; ``None`` or ``"none"`` for full precision)."""


class MissingQuantizationBackendError(QuantizationError, MissingExtraError):
    """The quantization backend (bitsandbytes or torchao) is not installed; the message
    names the extra to install."""


class QuantizationDeviceError(QuantizationError, DeviceError):
    """The quantization backend cannot run on the requested device."""
