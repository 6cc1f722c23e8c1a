"""Knowledge distillation as a Lightning module: a student trained against a frozen teacher.

One module serves every distillation method: the loss is cross-entropy plus optional soft-target (Hinton et
al. 2015) and feature terms (FitNets hints, Romero et al. 2015; attention transfer, Zagoruyko & Komodakis
2017). Features are taken with forward hooks on modules named by path, so model code is never edited.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.baselines.classifier import ClassifierModule, TrainConfig
from slimbench.core.errors import ConfigError, NotApplicableError

FeatureKind = Literal["hint", "attention"]

# The frozen teacher is in eval mode on purpose (and `fit` sets the student to train mode itself).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


# -- loss terms (pure functions, so tests can pin them) ---------------------------------------------------------

def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), batch mean.

    Equal to Hinton's cross-entropy against softened teacher targets up to the teacher's (constant) entropy;
    T² keeps its gradient scale independent of T.
    """
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)


def logit_distillation_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                             targets: torch.Tensor, temperature: float, alpha: float,
                             label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """`{"ce", "kd"?, "loss"}` with loss = α·T²·KL(teacher_T ‖ student_T) + (1−α)·CE(student, labels).

    The one place the logit loss is computed: training logs its terms, tests pin its value.
    """
    terms = {"ce": F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)}
    if alpha == 0.0 or teacher_logits is None:
        terms["loss"] = terms["ce"]
        return terms
    terms["kd"] = soft_target_loss(student_logits, teacher_logits, temperature)
    terms["loss"] = alpha * terms["kd"] + (1.0 - alpha) * terms["ce"]
    return terms


def match_spatial(x: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Resize a `[B, C, H, W]` (or `[B, H, W]`) map to `size`: average-pool down, bilinear up."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    squeeze = x.dim() == 3
    x = x.unsqueeze(1) if squeeze else x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        x = F.adaptive_avg_pool2d(x, cast("tuple[int, int]", size))   # `size` is an [H, W] pair
    else:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.squeeze(1) if squeeze else x


def hint_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets: mean squared error between the (adapted) student feature and the teacher's."""
    if student_feature.dim() == 4:
        student_feature = match_spatial(student_feature, teacher_feature.shape[-2:])
    return F.mse_loss(student_feature, teacher_feature)


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """Spatial attention of a `[B, C, H, W]` feature: channel mean of squared activations, L2-normalised."""
    return F.normalize(feature.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Attention transfer, as in the authors' code: mean squared distance of normalised attention maps."""
    student_map = match_spatial(student_feature.pow(2).mean(dim=1), teacher_feature.shape[-2:])
    return (F.normalize(student_map.flatten(1), dim=1) - attention_map(teacher_feature)).pow(2).mean()


# -- feature taps ---------------------------------------------------------------------------------------------

def module_paths(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def resolve_path(model: nn.Module, path: str, role: str) -> str:
    """The full module path for `path`: exact, else the one path ending in `.path`.

    The suffix rule lets one suite say "features.13" for a MobileNetV2 whether or not a text task has
    prepended its token embedding (then the path is "1.features.13"). Anything else is one ConfigError
    listing the valid paths (as many levels as fit in 60 names) and the closest matches.
    """
    names = module_paths(model)
    if path in names:
        return path
    ends = [n for n in names if n.endswith("." + path)] if path else []
    if len(ends) == 1:
        return ends[0]
    depth = max([d for d in range(8) if sum(n.count(".") <= d for n in names) <= 60] or [0])
    shown = [n for n in names if n.count(".") <= depth][:60]
    close = difflib.get_close_matches(path, names, n=3)
    suggestion = f" (closest: {', '.join(close)})" if close else ""
    which = f"matches {len(ends)} modules ({', '.join(ends[:5])}{', …' if len(ends) > 5 else ''})" if ends \
        else "names no module"
    deepest = max(names, key=lambda n: n.count("."), default="")
    raise ConfigError(
        f"{role} ({type(model).__name__}): module path {path!r} {which}{suggestion}. Valid module paths "
        f"({len(shown)} of {len(names)}, up to {depth + 1} level(s) deep; deeper ones such as {deepest!r} "
        f"work too): {', '.join(shown)}"
    )


class FeatureTap:
    """A forward hook that keeps the latest output of one named submodule.

    A transformer block's `[B, N, D]` tokens are kept as a `[B, D, N, 1]` map (width as channels, one position per
    token), so hints (TinyBERT's hidden-state loss: a learned projection of the width, then MSE) and attention transfer
    (which tokens are active) apply to them as to a convolution's map.
    """

    def __init__(self, model: nn.Module, path: str, role: str):
        self.path, self.role = resolve_path(model, path, role), role
        self.module = model.get_submodule(self.path)
        self.output: torch.Tensor | None = None
        self._handle = self.module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor):
            raise NotApplicableError(f"{self.role} module {self.path!r} returns {type(output).__name__}, not a tensor; "
                                     "pick a module whose output is one feature map")
        self.output = output.transpose(1, 2).unsqueeze(-1) if output.dim() == 3 else output

    def take(self) -> torch.Tensor:
        out, self.output = self.output, None
        if out is None:
            raise NotApplicableError(f"{self.role} module {self.path!r} did not run in the forward pass")
        return out

    def remove(self) -> None:
        self._handle.remove()


@dataclass
class FeaturePair:
    """Distil the teacher module at `teacher` into the student module at `student` (module paths)."""

    student: str
    teacher: str


def make_adapter(student_shape: torch.Size, teacher_shape: torch.Size, pair: FeaturePair) -> nn.Module:
    """The learned student→teacher projection for a hint: a 1×1 conv (or linear) where channel counts differ."""
    if len(student_shape) != len(teacher_shape) or len(student_shape) not in (2, 4):
        raise NotApplicableError(
            f"hint between student {pair.student!r} {tuple(student_shape)} and teacher {pair.teacher!r} "
            f"{tuple(teacher_shape)} needs two [B, C, H, W] or two [B, C] features"
        )
    c_s, c_t = student_shape[1], teacher_shape[1]
    if c_s == c_t:
        return nn.Identity()
    if len(student_shape) == 2:
        return nn.Linear(c_s, c_t)
    return nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t))  # BN: matches the teacher's scale


# -- the Lightning module ---------------------------------------------------------------------------------------

@dataclass
class DistillLoss:
    """Weights of the distillation loss: (1−α)·CE + α·T²·KL + β·feature term."""

    alpha: float = 0.0                    # soft-target weight; 0 = labels only
    temperature: float = 4.0
    feature_kind: FeatureKind = "hint"
    beta: float = 0.0                     # feature-term weight; 0 = no feature term
    pairs: list[FeaturePair] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"distillation: alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"distillation: temperature must be > 0, got {self.temperature}")
        if self.beta < 0:
            raise ConfigError(f"distillation: beta must be >= 0, got {self.beta}")

    @property
    def uses_features(self) -> bool:
        return self.beta > 0 and bool(self.pairs)

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0 or self.uses_features


class DistillationModule(ClassifierModule):
    """Trains `model` (the student) against a frozen `teacher`; only the student is kept (`self.model`).

    The teacher is frozen in place: eval mode (its BatchNorm statistics never move, even when Lightning calls
    `.train()`), `requires_grad=False`, and run under `no_grad`. Hint adapters live here, not in the student,
    so they are trained but never deployed or counted. `example` (a few real inputs) sizes the adapters.
    """

    def __init__(self, model: nn.Module, teacher: nn.Module, num_classes: int, cfg: TrainConfig, loss: DistillLoss,
                 example: torch.Tensor | None = None):
        super().__init__(model, num_classes, cfg)
        self.loss = loss
        self.teacher = teacher.eval().requires_grad_(False)
        self.student_taps: list[FeatureTap] = []
        self.teacher_taps: list[FeatureTap] = []
        self.adapters = nn.ModuleList()
        if loss.uses_features:
            self._attach_features(example)

    def _attach_features(self, example: torch.Tensor | None) -> None:
        if example is None:
            raise ConfigError("feature distillation needs example inputs to size its adapters")
        try:
            for p in self.loss.pairs:
                self.student_taps.append(FeatureTap(self.model, p.student, "student"))
                self.teacher_taps.append(FeatureTap(self.teacher, p.teacher, "teacher"))
            student_feats, teacher_feats = self._probe(example)
        except Exception:
            self.remove_hooks()   # a bad path leaves both models as they were
            raise
        for pair, fs, ft in zip(self.loss.pairs, student_feats, teacher_feats):
            if self.loss.feature_kind == "attention":
                if fs.dim() != 4 or ft.dim() != 4:
                    raise NotApplicableError(
                        f"attention transfer needs [B, C, H, W] features; student {pair.student!r} gives "
                        f"{tuple(fs.shape)}, teacher {pair.teacher!r} gives {tuple(ft.shape)}")
                self.adapters.append(nn.Identity())   # attention maps are channel-free: nothing to learn
            else:
                self.adapters.append(make_adapter(fs.shape, ft.shape, pair))

    @torch.no_grad()
    def _probe(self, example: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        was_training = self.model.training
        self.model.eval()   # no BatchNorm statistics move while sizing the adapters
        try:
            self.model(example)
            self.teacher(example)
            return [t.take() for t in self.student_taps], [t.take() for t in self.teacher_taps]
        finally:
            self.model.train(was_training)

    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        self.teacher.eval()
        return self

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.cfg.channels_last:
            self.teacher.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        super().on_fit_end()
        self.teacher.to(memory_format=torch.contiguous_format)
        self.remove_hooks()

    def remove_hooks(self) -> None:
        """Detach the feature hooks so the returned student is a plain model (safe to call twice)."""
        for tap in self.student_taps + self.teacher_taps:
            tap.remove()

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term of the loss for one batch (before weighting), plus the weighted total under "loss"."""
        loss = self.loss
        logits = self.model(x)
        teacher_logits = None
        if loss.uses_teacher:   # the teacher also runs for feature terms alone: its hooks fill the taps
            with torch.no_grad():
                teacher_logits = self.teacher(x)
        terms = logit_distillation_terms(logits, teacher_logits, y, loss.temperature, loss.alpha,
                                         self.cfg.label_smoothing)
        total = terms.pop("loss")
        if loss.uses_features:
            term = attention_loss if loss.feature_kind == "attention" else hint_loss
            feats = [term(adapter(s.take()), t.take())
                     for adapter, s, t in zip(self.adapters, self.student_taps, self.teacher_taps)]
            terms[loss.feature_kind] = torch.stack(feats).sum()
            total = total + loss.beta * terms[loss.feature_kind]
        terms["loss"] = total
        return terms

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        terms = self.loss_terms(x, y)
        for name, value in terms.items():
            if name != "loss":
                self.log(f"train_{name}", value, on_step=False, on_epoch=True)
        return terms["loss"]
