"""The study's controls, each declared once: an upsampler, the control run beside it, what
the control rules out, whether that could explain the upsampler's gain over the fixed
baseline, and how the report reads the paired difference upsampler - control. The
statistics (seg.study.stats) pair by these; the report (seg.study.report) reads them."""

from __future__ import annotations

from dataclasses import dataclass

# fixed like the baseline, nothing learned to control for: read against bilinear alone
FIXED_ALTERNATIVES = frozenset({"nearest"})


@dataclass(frozen=True)
class Control:
    """``upsampler`` - ``control``, paired by seed. The readings are said when the
    upsampler is significantly better, significantly worse, or neither: ``{u}`` the
    upsampler, ``{c}`` the control, ``{d}`` the absolute mean difference in points."""

    upsampler: str
    control: str
    rules_out: str
    explains_gain: bool  # whether what it rules out could explain a gain over bilinear
    better: str
    worse: str
    same: str

    def reading(self, significance: int) -> str:
        """The reading for a difference that is significantly positive (1), negative (-1)
        or neither (0)."""
        return {1: self.better, -1: self.worse, 0: self.same}[significance]


def content_awareness(aware: str) -> Control:
    return Control(aware, f"{aware}_static", "content-awareness", True,
                   "content-awareness helps: {u} beats its input-independent twin {c} by {d}",
                   "the input-independent {c} beats {u} by {d}: content-awareness does harm "
                   "here",
                   "{c} matches {u}: a learned pattern the same everywhere does as well")


def learned_parameters(upsampler: str) -> Control:
    return Control(upsampler, "bilinear_conv", "learned parameters", True,
                   "{u} beats {c}, bilinear followed by a learned filter, by {d}",
                   "{c}, bilinear followed by a learned filter, beats {u} by {d}",
                   "{c}, bilinear followed by a learned filter, matches {u}")


CONTROLS: tuple[Control, ...] = (
    Control("transposed", "bilinear_conv", "parameter count", True,
            "the gain over bilinear is not explained by parameter count: {u} beats {c} by {d}",
            "{c} beats {u} by {d}: as many learned parameters after a fixed resize do better",
            "{c} matches {u}: the gain may be the extra parameters"),
    Control("transposed", "transposed_kaiming", "the bilinear start", True,
            "the bilinear start matters: {u} beats its random start ({c}) by {d}",
            "the random start ({c}) beats {u} by {d}: the bilinear start holds it back",
            "{c} matches {u}: the bilinear start makes no measurable difference"),
    Control("transposed", "transposed_frozen", "learning the kernel", True,
            "learning the kernel is what helps: {u} beats its kernel frozen at bilinear ({c}) "
            "by {d}",
            "{c}, the same kernel frozen at bilinear, beats {u} by {d}: learning it does harm",
            "{c} matches {u}: learning the kernel makes no measurable difference"),
    Control("transposed_full", "transposed", "full vs channel-wise kernel", False,
            "the full C x C kernel helps: {u} beats the channel-wise {c} by {d}",
            "the full C x C kernel does worse: the channel-wise {c} beats {u} by {d}",
            "{u} matches {c}: a full C x C kernel adds nothing over one kernel per channel"),
    content_awareness("dysample"),
    learned_parameters("dysample"),
    content_awareness("carafe"),
    learned_parameters("carafe"),
    learned_parameters("resize_conv"),
    learned_parameters("pixel_shuffle"),
    Control("sapa", "sapa_free", "a learned embedding of the similarity", True,
            "learning the similarity helps: {u} beats its parameter-free twin {c} by {d}",
            "the parameter-free {c} beats {u} by {d}: learning the similarity does harm here",
            "{c} matches {u}: the guide's raw similarity does as well as a learned one"),
    learned_parameters("sapa"),
    learned_parameters("fade"),
)
