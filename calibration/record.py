"""What a quantized bundle records of its calibration (manifest.json `calibration`).

Enough to rebuild it the same way and for the runtime to show it (`vp info`):
the method, the statistic and SmoothQuant's alpha, the calibration data's
source, size and fingerprint, every per-tensor activation scale (W8A8), and the
accuracy gate's figures. Torch-free: the runtime reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, kw_only=True)
class CalibrationRecord:
    precision: str
    method: str
    statistic: str | None  # the activation statistic (W8A8), None for weight-only
    smoothquant_alpha: float | None
    data: dict  # vp.calibration.data.CalibrationSet.describe()
    weight_scales: str
    activation_scales: dict[str, float]  # module -> per-tensor scale (W8A8); empty for weight-only
    gate: dict  # vp.calibration.gate.verdict(); {"skipped": why} with --no-accuracy-gate

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CalibrationRecord:
        try:
            return cls(**d)
        except TypeError as error:
            raise ValueError(f"manifest.json: the calibration record is malformed ({error}); re-export the bundle") from None

    def lines(self) -> list[str]:
        """A human description (vp info)."""
        d = self.data
        out = [f"calibration: {self.method}",
               f"  data: {d['sequences']} {d['source']} sequences ({', '.join(d['tasks'])}), {d['held_out']} held out, "
               f"fingerprint {d['fingerprint'][:16]}",
               f"  weights: {self.weight_scales}"]
        if self.activation_scales:
            values = list(self.activation_scales.values())
            out.append(f"  activations: {len(values)} per-tensor scales by {self.statistic} "
                       f"({min(values):.3g} .. {max(values):.3g})")
        gate = self.gate
        if "skipped" in gate:
            out.append(f"  accuracy gate: not run ({gate['skipped']})")
            return out
        t = gate["teacher_forced"]
        out.append(f"  accuracy gate: {'passed' if gate['passed'] else 'FAILED'}; teacher-forced top-1 "
                   f"{t['top1']:.2%}, mean KL {t['kl']:.2g} over {t['positions']} positions of {t['sequences']} "
                   f"held-out sequences")
        if gate.get("evaluation"):
            e = gate["evaluation"]
            rows = ", ".join(f"{row.removeprefix('t2v ')} {e['quantized'][row]:.0f}% (fp32 {e['fp32'][row]:.0f}%)"
                             for row in e["quantized"])
            out.append(f"  evaluator, {e['cases']} t2v cases: {rows}")
        out += [f"  K block {r['cpu_kernel_block']} missed the gate: {'; '.join(r['failures'])}"
                for r in gate.get("rejected", ())]
        out += [f"  failed: {f}" for f in gate["failures"]]
        return out
