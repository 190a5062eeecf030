"""What to do about a diagnosis: the command that fits it, exactly as `POST /api/runs/{run}/commands`
takes it, and a reason a person can read (docs/diagnosis.md). Pure: no SQL, no web.

- saturated: retire the arm (its groups give no gradient; retiring frees its share for the others);
- starved with a high last signal: boost it x`boost_factor` for `boost_steps` steps;
- too hard while the curriculum still spends on it (p at least `spend_share` of an equal share):
  lower it, boost x`lower_factor` for `lower_steps` steps;
- regressing (forgetting) while active: boost it x`boost_factor` for `boost_steps` steps, to practise it;
- learning, unstable, retired, or too hard and already starved of samples: no command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.store.commands import command_label


@dataclass(frozen=True, slots=True)
class SuggestionRules:
    boost_factor: float = 2.0
    boost_steps: int = 50
    lower_factor: float = 0.25
    lower_steps: int = 200
    spend_share: float = 0.5


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A command body for the commands API, with the reason filled in, and its audit-log label."""

    kind: str
    arm: str
    value: float | None
    steps: int | None
    reason: str

    @property
    def label(self) -> str:
        return command_label(self.kind, self.arm, self.value, self.steps)

    def command(self) -> dict[str, Any]:
        """The body of `POST /api/runs/{run}/commands`."""
        return {"kind": self.kind, "arm": self.arm, "value": self.value, "steps": self.steps, "reason": self.reason}


def _pct(x: Any) -> str:
    return "?" if x is None else f"{100 * x:.0f} %"


def _num(x: Any) -> str:
    return "?" if x is None else f"{x:.2f}"


def describe(diagnosis: str | None, since: int, f: dict[str, Any]) -> str:
    """The human reason for a diagnosis: what it is, since when, and the figures behind it."""
    acc, zv, mab, p = f.get("accuracy"), f.get("zero_var"), f.get("mean_abs_adv"), f.get("p")
    signal = f"{_pct(zv)} zero-variance groups" if zv is not None else f"mean |A| {_num(mab)}"
    if diagnosis == "saturated":
        return f"saturated since step {since}: accuracy {_num(acc)}, {signal}"
    if diagnosis == "too_hard":
        return f"too hard since step {since}: accuracy {_num(acc)}, {signal}; the curriculum gives it p={_num(p)}"
    if diagnosis == "starved":
        shown = "?" if p is None else f"{p:.3f}"
        return (f"starved since step {since}: the curriculum gives it p={shown} while its last "
                f"signal was high (accuracy {_num(acc)}, {signal})")
    if diagnosis == "unstable":
        return (f"unstable since step {since}: its accuracy swings {_num(f.get('instability'))}x more than "
                f"sampling explains (accuracy {_num(acc)})")
    if diagnosis == "regressing":
        return (f"regressing since step {since}: accuracy {_num(acc)}, down from {_num(f.get('peak_accuracy'))} "
                "(or an evaluation fell from its best)")
    if diagnosis == "retired":
        return f"retired since step {since}"
    if diagnosis == "learning":
        return f"learning since step {since}: accuracy {_num(acc)}, {signal}"
    return "not enough completions yet for a diagnosis"


def suggest(arm: str, diagnosis: str | None, since: int, figures: dict[str, Any], active_arms: int,
            rules: SuggestionRules) -> Suggestion | None:
    """The command that fits `diagnosis`, or None when none does."""
    reason = describe(diagnosis, since, figures)
    p = figures.get("p") or 0.0
    if diagnosis == "saturated":
        return Suggestion("retire", arm, None, None, reason)
    if diagnosis in ("starved", "regressing"):
        return Suggestion("boost", arm, rules.boost_factor, rules.boost_steps, reason)
    if diagnosis == "too_hard" and p >= rules.spend_share / max(1, active_arms):
        return Suggestion("boost", arm, rules.lower_factor, rules.lower_steps, reason)
    return None
