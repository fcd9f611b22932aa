"""explain_stream: events, stop=, equality with explain, and the local decode loop."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from nla_lens import RowFinished, SegmentScored, TextDelta, stop_when_flat
from nla_lens.core.backend import DecodeUpdate, GenerationOutput, Sampling
from nla_lens.core.segments import explanation_view, may_end, segment_ends, segment_spans
from nla_lens.errors import BackendError, PaddingError, SamplingError


def by_row(events):
    rows = defaultdict(list)
    for e in events:
        rows[e.row].append(e)
    return rows


def first_segment(text: str) -> str:
    spans = segment_spans(text, final=True)
    return text[: spans[0][1]].strip() if spans else text


@pytest.fixture(scope="module")
def vectors(toy_residuals):
    return toy_residuals[0][:6]


@pytest.fixture(scope="module")
def explained(nla, vectors):
    return nla.explain(vectors, progress=False)


@pytest.fixture(scope="module")
def streamed(nla, vectors):
    return list(nla.explain_stream(vectors))


# ---- the toy pair, run to completion ----------------------------------------------------
def test_greedy_stream_to_completion_equals_explain(streamed, explained):
    finished = [e for e in streamed if isinstance(e, RowFinished)]
    assert sorted(e.row for e in finished) == list(range(len(explained)))
    for e in finished:
        assert e.explanation == explained[e.row]  # text, raw, flags and every score, exactly
        assert e.explanation.provenance == explained[e.row].provenance
        assert not e.cut_short and not e.explanation.cut_short


def test_events_of_a_row_arrive_in_order(streamed, explained):
    for row, events in by_row(streamed).items():
        assert isinstance(events[-1], RowFinished)
        assert sum(isinstance(e, RowFinished) for e in events) == 1
        text = explained[row].text
        deltas = [e for e in events if isinstance(e, TextDelta)]
        assert "".join(d.delta for d in deltas).strip() == text
        assert all(text.startswith(d.text.strip()) for d in deltas)
        segs = [e for e in events if isinstance(e, SegmentScored)]
        assert [s.index for s in segs] == list(range(len(segs)))
        assert segs and segs[-1].prefix == text
        # the last prefix is the whole text: its score is the row's, to the bit
        assert (segs[-1].cos, segs[-1].fve_nrm) == (explained[row].cos, explained[row].fve_nrm)
        assert segs[-1].baseline_label == explained[row].baseline
        assert all(text.startswith(s.prefix) for s in segs)


def test_stop_after_one_segment_gives_the_first_line_flagged(nla, vectors, explained):
    events = list(nla.explain_stream(vectors, stop=1))
    finished = {e.row: e for e in events if isinstance(e, RowFinished)}
    assert sorted(finished) == list(range(len(explained)))
    for row, done in finished.items():
        full = explained[row].text
        longer = len(segment_spans(full, final=True)) > 1
        assert done.explanation.text == first_segment(full)
        assert done.cut_short is longer and done.explanation.cut_short is longer
        segs = [e for e in events if isinstance(e, SegmentScored) and e.row == row]
        assert len(segs) == 1 and segs[0].prefix == done.explanation.text
        assert done.explanation.cos == segs[0].cos


def test_local_finished_rows_leave_the_batch(nla):
    vectors = torch.randn(12, nla.d_model, generator=torch.Generator().manual_seed(0))
    sizes: list[int] = []

    def record(module, args, kwargs):  # decode steps feed the last tokens' ids
        if kwargs.get("input_ids") is not None:
            sizes.append(kwargs["input_ids"].shape[0])

    hook = nla.av.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        outs = nla.av.backend.generate(nla.av.prompt_embeds(vectors), Sampling(max_new_tokens=60))
    finally:
        hook.remove()
    lengths = sorted(len(o.token_ids) for o in outs)
    assert lengths[0] < lengths[-1], "the rows must end at different steps for this check"
    assert sizes[0] == len(vectors) and sizes[-1] < len(vectors)
    assert sizes == sorted(sizes, reverse=True)
    # the batch holds exactly the rows still writing: one row per token it has yet to write
    assert sum(sizes) == sum(lengths) - len(vectors)


def test_cancelled_rows_stop_decoding(nla, vectors):
    stream = nla.av.backend.stream(nla.av.prompt_embeds(vectors[:3]), Sampling(max_new_tokens=30))
    seen: dict[int, int] = defaultdict(int)
    for step, updates in enumerate(stream):
        for u in updates:
            seen[u.row] += 1
        if step == 2:
            stream.cancel([1])
    assert seen[1] == 3 and seen[0] > 3


# ---- the stream logic on a scripted AV -------------------------------------------------
SCRIPT = "<explanation>the first line\nthe second line\nthe third line</explanation>"


class ScriptedStream:
    """Writes ``script`` ``step`` characters per step, for every row; records cancels."""

    def __init__(self, n: int, log: dict, script: str = SCRIPT, step: int = 3) -> None:
        self.n, self.log, self.cancelled = n, log, set()
        self.script, self.step = script, step
        log["cancelled"] = self.cancelled

    def __iter__(self):
        script = self.script
        for end in range(self.step, len(script) + self.step, self.step):
            text = script[:end]
            done = end >= len(script)
            rows = [r for r in range(self.n) if r not in self.cancelled]
            if not rows:
                return
            yield [DecodeUpdate(r, text, GenerationOutput(script) if done else None) for r in rows]

    def cancel(self, rows):
        self.cancelled.update(rows)

    def close(self):
        pass


class ScriptedBackend:
    name = "scripted"

    def __init__(self, script: str = SCRIPT, step: int = 3) -> None:
        self.log: dict = {}
        self.script, self.step = script, step

    def generate(self, embeds, params):
        return [GenerationOutput(self.script) for _ in range(len(embeds))]

    def stream(self, embeds, params):
        return ScriptedStream(len(embeds), self.log, self.script, self.step)


@pytest.fixture
def scripted(nla, monkeypatch):
    backend = ScriptedBackend()
    monkeypatch.setattr(nla.av, "backend", backend)
    return backend


def test_scripted_stop_after_one_and_two_segments(nla, vectors, scripted):
    for n, text in [(1, "the first line"), (2, "the first line\nthe second line")]:
        events = list(nla.explain_stream(vectors[:2], stop=n))
        done = [e for e in events if isinstance(e, RowFinished)]
        assert [e.explanation.text for e in done] == [text, text]
        assert all(e.cut_short and e.explanation.cut_short for e in done)
        assert scripted.log["cancelled"] == {0, 1}  # the decode was told to stop
        segs = [e for e in events if isinstance(e, SegmentScored)]
        assert sorted((s.row, s.index) for s in segs) == [(r, i) for r in (0, 1) for i in range(n)]
        assert all(e.explanation.cos is not None for e in done)
    full = [e for e in nla.explain_stream(vectors[:2]) if isinstance(e, RowFinished)]
    assert [e.explanation.text for e in full] == [explanation_view(SCRIPT)] * 2
    assert not any(e.cut_short for e in full)
    # a row with exactly N segments ended on its own: not cut short
    # (compared with a one-row stream: AR scores of a batch of 2 may differ in the last bits)
    three = [e for e in nla.explain_stream(vectors[:1], stop=3) if isinstance(e, RowFinished)]
    one = [e for e in nla.explain_stream(vectors[:1]) if isinstance(e, RowFinished)]
    assert not three[0].cut_short and three[0].explanation == one[0].explanation


@pytest.mark.parametrize("step", [3, 40])
def test_a_last_line_closed_after_its_newline_is_scored_with_the_row(
    nla, vectors, monkeypatch, step
):
    """A line is complete at its newline, so the last line of an explanation that closes
    right after one is scored mid-decode (when the close tag comes some steps later, step
    3) and again with the row: the last event of its index carries the row's own numbers.
    When the close tag arrives before the mid-decode batch is scored (step 40), it is
    scored once, with the row."""
    script = "<explanation>the first line\nthe second line\n</explanation>"
    monkeypatch.setattr(nla.av, "backend", ScriptedBackend(script, step))
    events = list(nla.explain_stream(vectors[:2]))
    for row in (0, 1):
        segs = [e for e in events if isinstance(e, SegmentScored) and e.row == row]
        done = next(e for e in events if isinstance(e, RowFinished) and e.row == row)
        assert done.explanation.text == "the first line\nthe second line"
        assert [s.index for s in segs] == ([0, 1, 1] if step == 3 else [0, 1])
        assert segs[-1].prefix == done.explanation.text and segs[-1].segment == "the second line"
        last = segs[-1]
        assert (last.cos, last.fve_nrm, last.mse_nrm) == (
            done.explanation.cos, done.explanation.fve_nrm, done.explanation.mse_nrm
        )  # fmt: skip
    # stop=2 mid-decode cuts at the second newline, before the AV closed: flagged, honestly
    # (it cannot know the close tag was next); arriving with the close tag, it is not a cut
    cut = list(nla.explain_stream(vectors[:1], stop=2))[-1].explanation
    assert cut.text == "the first line\nthe second line" and cut.cut_short == (step == 3)


class RowScriptsStream:
    """One script per row, one character a step; ``log["step"]`` is the step just sent."""

    def __init__(self, scripts: list[str], log: dict) -> None:
        self.scripts, self.log = scripts, log

    def __iter__(self):
        for step in range(1, max(len(s) for s in self.scripts) + 1):
            self.log["step"] = step
            yield [
                DecodeUpdate(r, s[:step], GenerationOutput(s) if step == len(s) else None)
                for r, s in enumerate(self.scripts)
                if step <= len(s)
            ]

    def cancel(self, rows):
        pass

    def close(self):
        pass


def test_first_segments_are_scored_sooner_than_later_ones(nla, vectors, monkeypatch):
    """A segment completed mid-decode waits for company in an AR batch while another row
    is still writing: a row's first segment at most SCORE_WAIT_STEPS steps, a later one at
    most LATER_WAIT_STEPS (its text is already shown; an AR call costs about the same for
    few prefixes as for many)."""
    from nla_lens.core import streaming

    fast = "<explanation>ab\ncdefgh\nij</explanation>"
    slow = "<explanation>" + "k" * 40 + "\nlm</explanation>"
    log: dict = {}

    class Backend(ScriptedBackend):
        def stream(self, embeds, params):
            return RowScriptsStream([fast, slow], log)

    monkeypatch.setattr(nla.av, "backend", Backend())
    scored = {
        (e.row, e.index): log["step"]
        for e in nla.explain_stream(vectors[:2])
        if isinstance(e, SegmentScored)
    }
    tag = len("<explanation>")
    line1, line2 = tag + 3, tag + 3 + 7  # the steps that send each line's newline
    assert scored[(0, 0)] - line1 == streaming.SCORE_WAIT_STEPS - 1
    assert scored[(0, 1)] - line2 == streaming.LATER_WAIT_STEPS - 1
    assert streaming.LATER_WAIT_STEPS > streaming.SCORE_WAIT_STEPS
    assert (1, 0) in scored and (0, 2) in scored  # every segment is scored in the end


def test_scripted_stop_function(nla, vectors, scripted):
    calls = []

    def after_two(segments):
        calls.append([s.index for s in segments])
        assert all(s.cos is not None for s in segments)
        return len(segments) == 2

    events = list(nla.explain_stream(vectors[:1], stop=after_two))
    done = [e for e in events if isinstance(e, RowFinished)]
    assert done[0].explanation.text == "the first line\nthe second line" and done[0].cut_short
    assert calls == [[0], [0, 1]]
    assert not any(isinstance(e, SegmentScored) and e.index >= 2 for e in events)


def test_stop_when_flat(nla, vectors, scripted):
    events = list(nla.explain_stream(vectors[:2], stop=stop_when_flat(min_gain=float("inf"))))
    done = [e for e in events if isinstance(e, RowFinished)]
    assert all(e.explanation.text == "the first line\nthe second line" for e in done)
    never = list(nla.explain_stream(vectors[:1], stop=stop_when_flat(min_gain=-float("inf"))))
    assert not next(e for e in never if isinstance(e, RowFinished)).cut_short


def make_segment(score):
    return SegmentScored(0, 0, "s", "s", score, score, None)


def test_stop_when_flat_rule():
    flat = stop_when_flat(min_gain=0.05)
    assert not flat([make_segment(0.1)])
    assert not flat([make_segment(0.1), make_segment(0.2)])
    assert flat([make_segment(0.1), make_segment(0.12)])
    assert flat([make_segment(0.3), make_segment(0.1)])
    with pytest.raises(SamplingError, match="AR"):
        flat([make_segment(None), make_segment(None)])


@pytest.mark.parametrize("bad", [0, -2, True, "1", 1.5, [1]])
def test_bad_stop_values_are_refused(nla, vectors, bad):
    with pytest.raises(SamplingError, match="stop"):
        nla.explain_stream(vectors[:1], stop=bad)


def test_bad_stop_function_result_is_refused(nla, vectors, scripted):
    with pytest.raises(SamplingError, match="must return True"):
        list(nla.explain_stream(vectors[:1], stop=lambda segs: "yes"))
    with pytest.raises(SamplingError, match="min_gain"):
        stop_when_flat(min_gain=float("nan"))


def test_a_stream_that_ends_early_is_an_error(nla, vectors, monkeypatch):
    class Dropping(ScriptedBackend):
        def stream(self, embeds, params):
            class Short(ScriptedStream):
                def __iter__(self):
                    yield [DecodeUpdate(0, SCRIPT[:20])]

            return Short(len(embeds), self.log)

    monkeypatch.setattr(nla.av, "backend", Dropping())
    events = []
    with pytest.raises(BackendError, match="without finishing rows"):
        events.extend(nla.explain_stream(vectors[:1]))
    assert not any(isinstance(e, RowFinished) for e in events)


def test_a_backend_that_cannot_stream_still_gives_every_event(nla, vectors, monkeypatch):
    class Plain:
        name = "plain"

        def generate(self, embeds, params):
            return [GenerationOutput(SCRIPT) for _ in range(len(embeds))]

    monkeypatch.setattr(nla.av, "backend", Plain())
    events = list(nla.explain_stream(vectors[:2], stop=1))
    done = [e for e in events if isinstance(e, RowFinished)]
    assert [e.explanation.text for e in done] == ["the first line"] * 2
    assert all(e.cut_short for e in done)


# ---- segments ------------------------------------------------------------------------
def test_segments_are_decided_online():
    text = (
        "A list of animals and places so far: the cat, the owl. It is a question.\n"
        '  The phrase "the cat lives in" is about the cat; it names where the cat lives, in the text so far. '
        "That fact is the second one of the text and the reader knows it well.\n"
        'The last token " in" is followed by a place: Paris, or Rome.'
    )
    full = segment_ends(text)
    assert len(full) == 3  # two lines, the long second one cut after its first sentence
    assert segment_ends("the first line \n") == [14]  # a line ends at its newline, at once
    assert segment_ends("One sentence. ") == [] and segment_ends("a\n\n  ") == [1]
    before: list[int] = []
    for k in range(len(text) + 1):
        ends = segment_ends(text[:k])
        assert ends == full[: len(ends)]
        assert all(e < k for e in ends)
        if not may_end(text[:k], before[-1] if before else 0):  # the stream's shortcut
            assert ends == before, k
        before = ends
    spans = segment_spans(text, final=True)
    assert text[: spans[0][1]] == text.splitlines()[0]
    assert text[: spans[-1][1]] == text.rstrip()


def test_view_holds_back_a_partial_close_tag():
    assert explanation_view("nothing yet") is None
    assert explanation_view("<explanation> line\nmore </expl") == "line\nmore "
    assert explanation_view("<explanation>done</explanation> tail") == "done"
    assert explanation_view("<explanation>a <b") == "a <b"
    assert explanation_view("<explanation>a <") == "a "


def test_stream_sampled_rows_are_reproducible(nla, vectors):
    s = Sampling(temperature=1.0, seed=3, max_new_tokens=40)
    a = [e.explanation for e in nla.explain_stream(vectors[:3], s) if isinstance(e, RowFinished)]
    b = nla.explain(vectors[:3], sampling=s, progress=False)
    assert [e.text for e in a] == [e.text for e in b]
    assert torch.equal(torch.tensor([e.cos for e in a]), torch.tensor([e.cos for e in b]))


def test_stream_honours_a_padding_mask_and_keeps_the_input_notes(nla, vectors, explained):
    grid = vectors.reshape(2, 3, -1).clone()
    grid[0, 0] = grid[0, 1]  # a left pad: the same vector as the first real token
    with pytest.raises(PaddingError, match="mask="):
        nla.explain_stream(grid)  # refused before decoding, as explain refuses it
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    stream = nla.explain_stream(grid, mask=mask)
    assert stream.labels == nla.explain(grid, mask=mask, max_new_tokens=1, score=False).labels
    assert stream.labels[0] == {"batch": 0, "position": 0} and not stream.input_notes
    done = {e.row: e.explanation for e in stream if isinstance(e, RowFinished)}
    assert sorted(done) == list(range(5))  # the pad slot is not explained
    for row, e in done.items():  # row r reads vector r + 1 (vector 0 was the pad's slot)
        assert e.text == explained[row + 1].text
        assert e.cos == pytest.approx(explained[row + 1].cos, abs=1e-5)
    # no mask, a batch that does not look padded: streamed, with explain's note
    plain = nla.explain_stream(vectors.reshape(2, 3, -1))
    assert any("no mask was given" in n for n in plain.notes())
    assert plain.input_notes == nla.explain(vectors.reshape(2, 3, -1), max_new_tokens=1).input_notes
    assert sum(isinstance(e, RowFinished) for e in plain) == 6
    assert (
        not nla.explain_stream(vectors).input_notes and nla.explain_stream(vectors).labels is None
    )


def test_the_streams_shortcut_never_misses_a_segment_end():
    """On random texts of words, spaces, sentence ends and line breaks: wherever ``may_end``
    says no end can follow the last one, ``segment_ends`` finds none."""
    import random

    rng = random.Random(3)
    pieces = ["word", "a", " ", " ", "  ", ". ", "; ", "!", "?", "\n", " \n", "\r\n", "\n\n", "\t"]
    for _ in range(150):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(10, 160)))
        before: list[int] = []
        for k in range(len(text) + 1):
            ends = segment_ends(text[:k])
            if not may_end(text[:k], before[-1] if before else 0):
                assert ends == before, (text, k)
            before = ends


def test_a_partial_close_tag_is_held_back_exactly() -> None:
    """``explanation_view`` holds back the longest tail that could begin the close tag (a
    search from the tag's first character): equal to trying every tail length, on random
    texts over the tag's own characters, for tags with and without a repeated first one."""
    import random

    from nla_lens.core.segments import _held_back

    def every_length(text: str, tag: str) -> str:
        for k in range(min(len(tag) - 1, len(text)), 0, -1):
            if tag.startswith(text[-k:]):
                return text[:-k]
        return text

    rng = random.Random(3)
    for tag in ("</explanation>", "<<a<", "aaab", "x"):
        alphabet = sorted({*tag, "a", "b", " "})
        for _ in range(5000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(20)))
            if rng.random() < 0.5:
                text += tag[: rng.randrange(len(tag))]
            assert _held_back(text, tag) == every_length(text, tag), (text, tag)
    assert explanation_view("<explanation>a b</expl") == "a b"
