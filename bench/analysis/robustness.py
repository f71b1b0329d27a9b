"""The verdict's headline: contrasts that use every k, failed runs and their rate per k, and the
multiplicity rule over the statistics the verdict reads.

Every function works on the **runs table** of ``bench.analysis.aggregate`` (see
``bench.analysis.stats``), restricted to ok runs.

1. **Headline contrasts** (``CONTRASTS``, chosen before the data by ``[report] contrast``):
   - ``trend`` (default): the k levels of ``stats.fit_k_model`` regressed on x = 1 - 1/k with
     the combinations as weights (the shape of a gain that comes from averaging k teachers'
     logits: the teacher-seed variance of the target falls as 1/k), reported as the gain at the
     largest k that the fitted trend implies, x(N) - x(base) times the slope;
   - ``pooled``: the combination-weighted mean of level(k) - level(base) over every k != base
     (all multi-teacher combinations against the single-teacher ones);
   - ``last``: level(largest k) - level(base), the one k = N combination (the old headline).
   Each is a fixed linear contrast of the k levels, with weights from the design (the number of
   combinations per k), never from the scores; under "k changes nothing" each is 0 whatever the
   weights, so its t interval (``stats.KFit.variance``) holds its level. ``trend`` and
   ``pooled`` lean on the k's with many combinations and on k = base, so the one k = N
   combination, whose spread the data cannot show, weighs little.
2. **Failed runs** (``failed_runs``): a run fails when its predictions are one class for every
   example (the majority-class collapse of small-data fine-tuning), when its score is past a
   user threshold on the bad side (``[report] failure_threshold``), or when it lies more than
   ``failure_mad`` robust standard deviations (1.4826 x MAD of the grid point's runs) below the
   median on the bad side. ``failure_table`` gives the rate per k with a Wilson interval;
   ``failure_trend`` the change of the rate over k (run-level least-squares slope on x = 1 - 1/k,
   as the gain at the largest k) with a randomisation p-value: the failure labels permuted among
   the runs of one student seed (``repeat``), so a seed that fails everywhere stays one seed's.
3. **Multiplicity.** The verdict reads a family of hypotheses, worst, best and mean case, and the
   failure rate when the sweep has a failed run; a graphical procedure at ``1 - level`` (Bretz et
   al. 2009; ``Multiplicity``, ``graphical``), its order and weights fixed in ``[report]``, decides
   which changes are shown; the intervals are printed at ``level``.
4. **Too small to tell.** An interval wider than the range of the scores says nothing the data
   do not: its call is "too small to tell" (as with no residual degrees of freedom).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis.aggregate import _ok
from bench.analysis.components import model_checks, variance_components
from bench.analysis.stats import (
    STATISTICS,
    Contrast,
    KFit,
    PointModel,
    _grid_points,
    _t_ppf,
    default_m,
    linear_contrast,
    minimum_detectable,
    point_model,
)
from bench.core.config import CONTRAST_KINDS, ReportSpec

CONTRASTS = CONTRAST_KINDS  # the names the spec checker accepts (it cannot import analysis)
DEFAULT_CONTRAST = ReportSpec.contrast
FAILURE_MAD = ReportSpec.failure_mad  # robust standard deviations below the median that make a run a failure
PERMUTATIONS = 4999  # randomisation draws of the failure trend's p-value (fixed seed: same report)
PERMUTATION_SEED = 20211116
FAIL = "fail"  # the failure rate's name in the headline table
TOO_SMALL = "too small to tell"  # the call of a statistic whose interval says nothing the scores do not


@dataclass(frozen=True)
class FailureRule:
    """What makes a run a failed run: predictions of one class, a score past ``threshold`` on the
    bad side (None: no threshold), or more than ``mad`` robust standard deviations from the
    median on the bad side (0: off)."""

    threshold: float | None = None
    mad: float = FAILURE_MAD


def contrast_weights(kind: str, ks: Sequence[int], counts: Sequence[int], base_k: int) -> np.ndarray:
    """The weights of contrast ``kind`` on the k levels ``ks`` (combinations per k: ``counts``),
    summing to 0, scaled so that a gain reaching g at every k > base (``pooled``), at the largest
    k (``last``) or g at the largest k along 1 - 1/k (``trend``) reads g."""
    ks_a, n = np.asarray(ks, float), np.asarray(counts, float)
    w = np.zeros(len(ks))
    if kind == "last":
        w[int(np.argmax(ks_a))], w[list(ks).index(base_k)] = 1.0, -1.0
    elif kind == "pooled":
        others = ks_a != base_k
        w[others] = n[others] / n[others].sum()
        w[list(ks).index(base_k)] = -1.0
    elif kind == "trend":
        x = 1.0 - 1.0 / ks_a
        xbar = float(n @ x / n.sum())
        ss = float(n @ (x - xbar) ** 2)
        w = n * (x - xbar) / ss * (x.max() - x[list(ks).index(base_k)])
    else:
        raise ValueError(f"unknown contrast {kind!r}; expected one of {', '.join(CONTRASTS)}")
    return w


def contrast_label(kind: str, ks: Sequence[int], base_k: int) -> str:
    """How the report names contrast ``kind`` in one phrase."""
    top = max(ks)
    if kind == "trend":
        return f"the trend over every k = {', '.join(map(str, ks))} along 1 - 1/k, read at k={top} against k={base_k}"
    if kind == "pooled":
        return f"every k != {base_k} pooled (combination-weighted) against k={base_k}"
    return f"k={top} against k={base_k}"


# ---- failed runs -------------------------------------------------------------------------------


def failed_runs(
    jobs: pd.DataFrame, higher_is_better: bool = True, rule: FailureRule = FailureRule(), grid: Sequence[str] = ()
) -> pd.Series:
    """Per ok run: True when it is a failed run under ``rule`` (module docstring, 2)."""
    ok = _ok(jobs)
    sign = 1.0 if higher_is_better else -1.0
    out = pd.Series(False, index=ok.index)
    if "constant_predictions" in ok:
        out |= ok["constant_predictions"].fillna(False).astype(bool)
    score = ok["score"].astype(float) * sign  # higher is better from here
    if rule.threshold is not None:
        out |= score < sign * rule.threshold
    if rule.mad > 0:
        for _, sub in _grid_points(score.to_frame().join(ok[list(grid)]), grid):
            s = sub["score"]
            med = float(s.median())
            spread = 1.4826 * float((s - med).abs().median())
            if spread > 0:
                out.loc[s.index] |= s < med - rule.mad * spread
    return out


def _wilson(failures: int, n: int, level: float) -> tuple[float, float]:
    """Wilson's score interval of a binomial rate (runs taken as independent)."""
    if n == 0:
        return float("nan"), float("nan")
    z = _t_ppf(0.5 + level / 2, 1e9)  # the normal quantile
    p = failures / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(mid - half, 0.0)), float(min(mid + half, 1.0))


def failure_table(jobs: pd.DataFrame, failed: pd.Series, grid: Sequence[str] = (), level: float = 0.95) -> pd.DataFrame:
    """Per (grid point, k): ok runs, failed runs, the failure rate and its Wilson interval."""
    ok = _ok(jobs).assign(failed=failed)
    rows = []
    for point, sub in _grid_points(ok, grid):
        for k, g in sub.groupby("k", sort=True):
            n, f = len(g), int(g["failed"].sum())
            lo, hi = _wilson(f, n, level)
            rows.append({**point, "k": int(k), "runs": n, "failed": f, "rate": f / n, "rate_lo": lo, "rate_hi": hi})
    return pd.DataFrame(rows, columns=[*grid, "k", "runs", "failed", "rate", "rate_lo", "rate_hi"])


@dataclass(frozen=True)
class Trend:
    """The failure rate's change over k: ``estimate`` (rate at the largest k minus rate at base, as
    the run-level trend along 1 - 1/k implies; < 0 is fewer failures), randomisation ``p``."""

    estimate: float
    p: float
    failures: int
    runs: int


def failure_trend(sub: pd.DataFrame, failed: pd.Series, base_k: int = 1, draws: int = PERMUTATIONS) -> Trend:
    """The trend of the failure rate over k in one grid point's ok runs ``sub`` (module docstring,
    2): T = sum over runs of (x - mean x of its seed) * failed, x = 1 - 1/k; p = the share of
    ``draws`` within-seed permutations of the labels with |T| at least the observed (plus one,
    over draws + 1). Deterministic: a fixed seed."""
    f = failed.loc[sub.index].to_numpy(float)
    x = 1.0 - 1.0 / sub["k"].to_numpy(float)
    seeds = sub["repeat"].to_numpy()
    xc = x.copy()
    for s in np.unique(seeds):
        xc[seeds == s] -= x[seeds == s].mean()
    ss = float(xc @ xc)
    if ss == 0 or f.sum() == 0 or f.sum() == len(f):
        return Trend(0.0, float("nan"), int(f.sum()), len(f))
    t_obs = float(xc @ f)
    span = x.max() - (1.0 - 1.0 / base_k)
    rng = np.random.default_rng(PERMUTATION_SEED)
    perm = np.empty((draws, len(f)))
    for s in np.unique(seeds):
        at = np.flatnonzero(seeds == s)
        perm[:, at] = rng.permuted(np.broadcast_to(f[at], (draws, len(at))), axis=1)
    t = perm @ xc
    p = (1 + int((np.abs(t) >= abs(t_obs) - 1e-12).sum())) / (draws + 1)
    return Trend(t_obs / ss * span, float(p), int(f.sum()), len(f))


# ---- the headline ------------------------------------------------------------------------------


def _headline(fit: KFit, kind: str, base_k: int, level: float) -> Contrast:
    """Contrast ``kind`` of the k levels of ``fit`` with its t interval."""
    return linear_contrast(fit, headline_vector(fit, kind, base_k), level)


HYPOTHESES = {"fail": FAIL, "worst": "worst_m", "mean": "mean", "best": "best_m"}  # [report] order names
HYPOTHESIS_WORDS = {"fail": "the failure rate", "worst": "the worst case", "mean": "the mean", "best": "the best case"}


@dataclass(frozen=True)
class Multiplicity:
    """The verdict's multiple-testing procedure, fixed in the spec before the runs (``[report]
    order`` and ``weights``): a graphical procedure (Bretz, Maurer, Brannath & Posch 2009) over the
    hypotheses "k changes nothing" for the failure rate and the worst, mean and best case. Each
    starts with its share ``weights`` of the error 1 - level; a rejected hypothesis passes its share
    to the next one in ``order`` not yet rejected (a fallback chain, cyclic), so the error rate of
    the family is held whatever the data. The default spends most of it on the failure rate, where
    seed robustness shows first, and the rest on the worst case; the mean and best case are tested
    with what those pass on."""

    order: tuple[str, ...] = ReportSpec.order
    weights: tuple[float, ...] = ReportSpec.weights

    @classmethod
    def of(cls, report: ReportSpec) -> Multiplicity:
        return cls(report.order, report.weights)

    def sentence(self, level: float, present: Sequence[str]) -> str:
        """The procedure in one sentence, at error 1 - ``level``, over the hypotheses ``present``
        (statistic names: those with a test; an absent or untestable one passes its share on)."""
        alpha = 1 - level
        mask = present_mask(self, present)
        start = graph_weights(self, mask)
        first = ", ".join(f"{HYPOTHESIS_WORDS[h]} at {alpha * w:.3g}" for h, w in zip(self.order, start) if w > 0)
        chain = " -> ".join(HYPOTHESIS_WORDS[h] for h, on in zip(self.order, mask) if on)
        return (
            f"which changes are shown is decided by a graphical procedure at {alpha:.0%} over {chain} "
            f"(Bretz et al. 2009): {first} first, each rejected hypothesis passing its share on to the next"
        )


def present_mask(procedure: Multiplicity, present: Sequence[str]) -> list[bool]:
    """Which of ``procedure.order`` are among the statistics ``present``."""
    return [HYPOTHESES[h] in present for h in procedure.order]


def _chain(n: int) -> np.ndarray:
    """The fallback graph on n hypotheses: each passes all of its weight to the next, the last to the first."""
    g = np.zeros((n, n))
    if n > 1:
        g[np.arange(n), (np.arange(n) + 1) % n] = 1.0
    return g


def _remove(w: np.ndarray, g: np.ndarray, active: np.ndarray, j: int) -> None:
    """Bretz et al. (2009), algorithm 1, step 2: take hypothesis j out of the graph, in place."""
    active[j] = False
    for lo in np.flatnonzero(active):
        w[lo] += w[j] * g[j, lo]
    new = g.copy()
    for lo in np.flatnonzero(active):
        for hi in np.flatnonzero(active):
            if lo == hi:
                continue
            denom = 1 - g[lo, j] * g[j, lo]
            new[lo, hi] = (g[lo, hi] + g[lo, j] * g[j, hi]) / denom if denom > 0 else 0.0
    g[:] = new
    w[j] = 0.0
    g[j, :] = 0.0
    g[:, j] = 0.0


def graph_weights(procedure: Multiplicity, testable: Sequence[bool]) -> list[float]:
    """The starting weights once the hypotheses that cannot be tested (no failed run, no interval)
    have passed theirs on along the graph."""
    w, g, active = np.array(procedure.weights, float), _chain(len(procedure.order)), np.ones(len(procedure.order), bool)
    for j in np.flatnonzero(~np.asarray(testable, bool)):
        _remove(w, g, active, int(j))
    return [float(x) for x in w]


def graphical(pvalues: Sequence[float], procedure: Multiplicity, alpha: float) -> list[bool]:
    """Which hypotheses (in ``procedure.order``; NaN p: cannot be tested, its weight passed on) the
    graphical procedure rejects with the family-wise error at most ``alpha`` (Bretz et al. 2009,
    algorithm 1: reject any H_j with p_j <= w_j alpha, update the weights and the graph, repeat)."""
    p = np.asarray(pvalues, float)
    w, g = np.array(procedure.weights, float), _chain(len(p))
    active = np.ones(len(p), bool)
    for j in np.flatnonzero(~np.isfinite(p)):
        _remove(w, g, active, int(j))
    rejected = [False] * len(p)
    while True:
        hits = [int(j) for j in np.flatnonzero(active) if w[j] > 0 and p[j] <= w[j] * alpha * (1 + 1e-12)]
        if not hits:
            return rejected
        best = min(hits, key=lambda i: p[i] / w[i] if w[i] > 0 else np.inf)
        rejected[best] = True
        _remove(w, g, active, best)


def point_models(
    jobs: pd.DataFrame, failed: pd.Series, grid: Sequence[str], m: int, higher_is_better: bool
) -> list[tuple[dict, pd.DataFrame, PointModel]]:
    """Per grid point: the point, its ok runs, and the k model (``stats.point_model``) of those that
    did not fail: what the headline and the model's checks read."""
    out = []
    for point, sub in _grid_points(_ok(jobs), grid):
        kept = sub[~failed.loc[sub.index]]  # worst / best / mean of the runs that did not fail
        out.append((point, sub, point_model(kept, m, higher_is_better)))
    return out


def headline_vector(fit: KFit, kind: str, base_k: int) -> np.ndarray:
    """The weights of headline contrast ``kind`` on the coefficients of ``fit``."""
    vec = np.zeros(len(fit.coef))
    vec[: len(fit.ks)] = contrast_weights(kind, fit.ks, fit.counts, base_k)
    return vec


def headline_table(
    jobs: pd.DataFrame,
    grid: Sequence[str] = (),
    m: int | None = None,
    higher_is_better: bool = True,
    base_k: int = 1,
    level: float = 0.95,
    kind: str = DEFAULT_CONTRAST,
    rule: FailureRule = FailureRule(),
    failed: pd.Series | None = None,
    procedure: Multiplicity = Multiplicity(),
    models: list[tuple[dict, pd.DataFrame, PointModel]] | None = None,
) -> pd.DataFrame:
    """Per (grid point, statistic: worst_m, best_m, mean and, when a run failed, ``FAIL``): the
    headline contrast ``kind`` turned so that > 0 is better (fewer failures too), its ``level``
    interval (none for the failure rate, which has the randomisation p-value), p, df, se, the
    minimum detectable gain at 80% power, and the score range of the runs that did not fail.
    Worst, best and mean are those of the runs that did not fail (a cell left with fewer than m
    runs is left out), so one collapsed run cannot swamp them: failures are read by their rate.
    ``call``: better / worse (the graphical ``procedure`` over the family at 1 - level), unclear,
    or "too small to tell" (no residual df, or an interval wider than the runs' range). ``failed``:
    the ``failed_runs`` of ``jobs`` under ``rule``, and ``models`` its ``point_models``, when the
    caller has them already."""
    ok = _ok(jobs)
    m = m or default_m(ok)
    sign = 1.0 if higher_is_better else -1.0
    if failed is None:
        failed = failed_runs(ok, higher_is_better, rule, grid)
    if models is None:
        models = point_models(ok, failed, grid, m, higher_is_better)
    rows = []
    for point, sub, model in models:
        if model.per_comb.empty:
            continue
        kept = sub[~failed.loc[sub.index]]
        spread = float(kept["score"].max() - kept["score"].min())
        block = []
        for s in STATISTICS:
            fit = model.fits[s]
            if base_k not in fit.ks or len(fit.ks) < 2:
                continue
            h = _headline(fit, kind, base_k, level)
            lo, hi = sorted((sign * h.lo, sign * h.hi)) if np.isfinite(h.lo) else (np.nan, np.nan)
            block.append(
                {
                    **point,
                    "statistic": s,
                    "gain": sign * h.estimate,
                    "lo": lo,
                    "hi": hi,
                    "p": h.p,
                    "df": h.df,
                    "se": h.se,
                    "mde": minimum_detectable(h.se, h.df, level),
                    "range": spread,
                    "n_ks": len(fit.ks),
                }
            )
        if int(failed.loc[sub.index].sum()) > 0 and sub["k"].nunique() > 1:
            t = failure_trend(sub, failed, base_k)
            block.append(
                {
                    **point,
                    "statistic": FAIL,
                    "gain": -t.estimate,
                    "lo": np.nan,
                    "hi": np.nan,
                    "p": t.p,
                    "df": np.nan,
                    "se": np.nan,
                    "mde": np.nan,
                    "range": 1.0,
                    "n_ks": int(sub["k"].nunique()),
                }
            )
        p_of = {b["statistic"]: (b["p"] if _informative(b) else np.nan) for b in block}
        shown = graphical([p_of.get(HYPOTHESES[h], np.nan) for h in procedure.order], procedure, 1 - level)
        significant_of = {HYPOTHESES[h]: hit for h, hit in zip(procedure.order, shown)}
        for b in block:
            significant = significant_of[b["statistic"]]
            b["contrast"] = kind
            b["call"] = _call(b, significant)
        rows += block
    cols = [*grid, "statistic", "contrast", "gain", "lo", "hi", "p", "df", "se", "mde", "range", "n_ks", "call"]
    return pd.DataFrame(rows, columns=cols)


def _informative(row: dict) -> bool:
    if row["statistic"] == FAIL:
        return bool(np.isfinite(row["p"]))
    width = row["hi"] - row["lo"]
    return bool(np.isfinite(width) and width / 2 <= row["range"])


def _call(row: dict, significant: bool) -> str:
    if not _informative(row):
        return TOO_SMALL
    if not significant:
        return "unclear"
    return "better" if row["gain"] > 0 else "worse"


@dataclass(frozen=True)
class VerdictTables:
    """What the verdict reads (``verdict_tables``): the headline contrasts with their calls, the
    failure rate per k, and per grid point the variance components and the model's checks
    (``bench.analysis.components``), all of the runs that did not fail."""

    headline: pd.DataFrame
    failures: pd.DataFrame
    components: pd.DataFrame
    checks: pd.DataFrame


def verdict_tables(
    jobs: pd.DataFrame,
    report: ReportSpec,
    grid: Sequence[str] = (),
    m: int | None = None,
    higher_is_better: bool = True,
    base_k: int = 1,
    level: float = 0.95,
) -> VerdictTables:
    """The verdict's tables under the spec's ``[report]`` choices, for ``bench report`` and ``bench
    compare`` alike; each grid point's k model is fitted once for all of them."""
    ok = _ok(jobs)
    m = m or default_m(ok)
    rule = FailureRule(report.failure_threshold, report.failure_mad)
    failed = failed_runs(ok, higher_is_better, rule, grid)
    models = point_models(ok, failed, grid, m, higher_is_better)
    headline = headline_table(
        ok, grid, m, higher_is_better, base_k, level, report.contrast, rule, failed, Multiplicity.of(report), models
    )
    failures = failure_table(ok, failed, grid, level)
    parts, checks = [], []
    for point, _, model in models:
        fit = model.fits.get("worst_m")
        vec = headline_vector(fit, report.contrast, base_k) if fit is not None and base_k in fit.ks else None
        parts.append(variance_components(model).assign(**point))
        checks.append(model_checks(model, vec).assign(**point))
    columns = list(grid)
    components = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    check_table = pd.concat(checks, ignore_index=True) if checks else pd.DataFrame()
    if columns:
        components = components[[*columns, *[c for c in components.columns if c not in columns]]]
        check_table = check_table[[*columns, *[c for c in check_table.columns if c not in columns]]]
    return VerdictTables(headline, failures, components, check_table)
