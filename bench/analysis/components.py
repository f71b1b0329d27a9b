"""What varies in a sweep, and the checks of what the verdict's intervals assume.

Both are functions of one grid point's runs and its k model (``stats.point_model``), over the
**runs table** of ``bench.analysis.aggregate`` (the runs that did not fail, as the headline reads):

- ``variance_components``: every source of variation in one run's score, by moments (docs/
  statistics.md, section 3): teacher (its quality), combination (a teacher combination's own
  effect), primary and cell (with a primary teacher: the primary's own effect, and a (combination,
  primary) cell's), seed (a student seed's effect shared by every combination), seed x k and
  primary x k (``bench.analysis.interactions``), teacher x seed (a seed's effect that depends on
  the teachers: it cancels from the mean's contrasts in a full design) and run (what is left), each with
  its share of their sum;
- ``model_checks``: one row per assumption the intervals rely on (no interaction with k beyond the
  ones modelled, the residual variance model over k, normal residual tails), its test, and what
  the report did about it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.analysis.interactions import NO_PRIMARY, PRIMARY_BY_K, SEED_BY_K, Interaction
from bench.analysis.stats import KFit, PointModel

COMPONENTS = (
    "teacher",
    "combination",
    "primary",
    "cell",
    "seed",
    SEED_BY_K,
    PRIMARY_BY_K,
    "teacher x seed",
    "run",
)


def _interaction(model: PointModel, name: str) -> Interaction:
    return next(i for i in model.interactions if i.name == name)


def _teacher_variance(fit: KFit) -> tuple[float, float]:
    """The variance of the teachers' own effects (the fit's teacher coefficients, the first teacher
    the reference at 0), less what the fit's noise puts into their spread; with its df (N - 1)."""
    if not fit.teacher_effects or fit.df <= 0 or not np.all(np.isfinite(fit.theta)):
        return float("nan"), 0.0
    n_k = len(fit.ks)
    effects = np.concatenate([[0.0], fit.coef[n_k:]])
    rows = np.vstack([np.zeros(fit.proj.shape[1]), fit.proj[n_k:]])  # maps the data to the effects
    centre = np.eye(len(effects)) - 1.0 / len(effects)
    sig2 = fit.basis @ fit.theta
    noise = float(np.trace(centre @ (rows * sig2[None, :]) @ rows.T @ centre))
    ss = float(((centre @ effects) ** 2).sum())
    n = len(effects)
    return max(0.0, (ss - noise) / (n - 1)), float(n - 1)


def _within_k_trace(fit: KFit, exposure: np.ndarray) -> float:
    """tr(M S) for an interaction with k of unit variance: S[c, c'] = exposure_c . exposure_c' for
    combinations of one k (they share that k's interaction terms), 0 across k's; M = I - hat matrix.
    Its variance times this is what the interaction adds to the residuals' sum of squares."""
    total = 0.0
    for k in np.unique(fit.row_k):
        at = np.flatnonzero(fit.row_k == k)
        e = exposure[at]
        total += float(np.einsum("ij,ij->", fit.resid_map[np.ix_(at, at)], e @ e.T))
    return total


def variance_components(model: PointModel) -> pd.DataFrame:
    """The variance components of one grid point (module docstring), from its k model of the mean
    (``model.fits["mean"]``) and interactions; one row per component present in the design:
    ``component``, ``variance`` (score units squared, >= 0), ``sd``, ``share`` of their sum and
    ``df`` of the mean square it rests on (NaN where it is a difference of several). Components the
    design cannot separate are left out (r = 1: no seed, seed x k or run rows; they are then in
    the combination's)."""
    fit = model.fits.get("mean")
    if fit is None:
        return pd.DataFrame(columns=["component", "variance", "sd", "share", "df"])
    seed, primary = _interaction(model, SEED_BY_K), _interaction(model, PRIMARY_BY_K)
    found: dict[str, tuple[float, float]] = {}
    found["teacher"] = _teacher_variance(fit)
    run = seed.noise if seed.estimable else float("nan")
    cell_noise = run / model.repeats if np.isfinite(run) else 0.0  # a cell mean's share of the run noise
    if primary.estimable:
        found["cell"] = (max(0.0, primary.noise - cell_noise), primary.noise_df)
        cell_noise = primary.noise
    if fit.df > 0 and np.all(np.isfinite(fit.theta)):
        lev = np.clip(np.diag(fit.resid_map), 0.0, None)
        # what else the residuals hold: each cell's noise, and each interaction's spread within a k
        within = cell_noise * float(lev @ fit.share) + sum(
            term.interaction.variance * _within_k_trace(fit, term.exposure) for term in fit.crossed
        )
        found["combination"] = (max(0.0, (float(fit.resid @ fit.resid) - within) / float(lev.sum())), float(fit.df))
    for name, value in primary.extra:
        found[name] = (value, float(model.teachers - 1))
    if primary.estimable:
        found[PRIMARY_BY_K] = (primary.variance, primary.df)
    for name, value in seed.extra:
        found[name] = (value, float("nan"))
    if seed.estimable:
        found[SEED_BY_K] = (seed.variance, seed.df)
        found["run"] = (seed.noise, seed.noise_df)
    rows = [(c, *found[c]) for c in COMPONENTS if c in found and np.isfinite(found[c][0])]
    out = pd.DataFrame(rows, columns=["component", "variance", "df"])
    total = float(out["variance"].sum())
    out["sd"] = np.sqrt(out["variance"])
    out["share"] = out["variance"] / total if total > 0 else np.nan
    return out[["component", "variance", "sd", "share", "df"]]


def _bartlett(variances: np.ndarray, dfs: np.ndarray) -> float:
    """Bartlett's (1937) test of equal variances from per-group variances and their df: p-value."""
    from scipy.special import chdtrc  # lazy: scipy only when a report computes statistics

    keep = (dfs > 0) & (variances > 0)
    v, d = variances[keep], dfs[keep]
    if len(v) < 2:
        return float("nan")
    pooled = float(d @ v / d.sum())
    stat = float(d.sum() * np.log(pooled) - d @ np.log(v))
    corr = 1 + (float((1 / d).sum()) - 1 / float(d.sum())) / (3 * (len(v) - 1))
    return float(chdtrc(len(v) - 1, stat / corr))


def standardized_residuals(fit: KFit) -> np.ndarray:
    """Each fitted combination's residual over its model standard deviation (sqrt(M_cc sigma^2_c)):
    N(0, 1) under the model's normal residuals."""
    if fit.df <= 0 or not np.all(np.isfinite(fit.theta)):
        return np.zeros(0)
    scale = np.diag(fit.resid_map) * (fit.basis @ fit.theta)
    keep = scale > 1e-15
    return fit.resid[keep] / np.sqrt(scale[keep])


def _interaction_check(i: Interaction, what: str, modelled_share: float) -> dict:
    if not i.estimable:
        return {
            "assumption": f"no {i.name} interaction beyond the one modelled",
            "check": f"{i.name} mean square against {what}",
            "result": "not estimable: " + i.reason,
            "p": np.nan,
            "action": (
                "the intervals cannot include it: each k's seed is the same single seed, so a seed x k "
                "interaction is confounded with k (r >= 2 seeds are needed to see it)"
                if i.name == SEED_BY_K and "one student seed" in i.reason
                else "the intervals cannot include it"
            ),
        }
    share = f"; it is {modelled_share:.0%} of the headline worst case's variance" if np.isfinite(modelled_share) else ""
    return {
        "assumption": f"no {i.name} interaction beyond the one modelled",
        "check": f"{i.name} mean square against {what} (F on {i.df:.0f} and {i.noise_df:.0f} df)",
        "result": f"{i.ratio:.2f}x what no interaction implies, p = {i.p:.2g}; sd {np.sqrt(i.variance):.4f}"
        + (f" ({i.note})" if i.note else ""),
        "p": i.p,
        "action": f"its estimated variance is in every interval over k{share}",
    }


def model_checks(model: PointModel, headline_vec: np.ndarray | None = None) -> pd.DataFrame:
    """One row per assumption the intervals rely on (module docstring), for one grid point:
    ``assumption``, ``check``, ``result`` (in words), ``p`` and ``action`` (what the report did).
    ``headline_vec``: the headline contrast's weights on the worst-case fit's coefficients, to say
    how much of its variance each interaction is."""
    fit = model.fits.get("worst_m")
    rows = []
    for i, what in (
        (_interaction(model, SEED_BY_K), "the run noise"),
        (_interaction(model, PRIMARY_BY_K), "the cell noise"),
    ):
        if i.name == PRIMARY_BY_K and i.reason == NO_PRIMARY:
            continue  # nothing crossed with k but the seed
        share = float("nan")
        if fit is not None and headline_vec is not None and i.estimable and i.variance > 0:
            total, _ = fit.variance(headline_vec)
            term = next((c for c in fit.crossed if c.interaction.name == i.name), None)
            if term is not None and total > 0:
                share = i.variance * term.coefficient(headline_vec @ fit.proj, fit.row_k) / total
        elif i.estimable:
            share = 0.0
        rows.append(_interaction_check(i, what, share))
    if fit is not None and fit.df > 0 and np.all(np.isfinite(fit.theta)):
        lev = np.clip(np.diag(fit.resid_map), 0.0, None)
        member = [np.isin(fit.row_k, g) for g in fit.groups]
        dfs = np.array([float(lev[m].sum()) for m in member])
        var = np.array([float((fit.resid[m] ** 2).sum()) / d if d > 0 else np.nan for m, d in zip(member, dfs)])
        if len(fit.groups) > 1:
            ratio = float(np.nanmax(var) / np.nanmin(var)) if np.nanmin(var) > 0 else float("inf")
            p = _bartlett(var, dfs)
            result = f"{len(fit.groups)} groups of k's, largest / smallest residual variance {ratio:.2f}, p = {p:.2g}"
            action = "each group of k's has its own residual variance in the intervals"
        else:
            p = float("nan")
            result = "one group: too few combinations per k for a variance of their own"
            action = "one residual variance for every k (a spread changing with k cannot be followed)"
        rows.append(
            {
                "assumption": "the spread between combinations, per group of k's, as modelled",
                "check": "Bartlett's test of the groups' residual variances (worst case)",
                "result": result,
                "p": p,
                "action": action,
            }
        )
        z = standardized_residuals(fit)
        if len(z) >= 3:
            from scipy.special import ndtr  # lazy: scipy only when a report computes statistics

            top = float(np.abs(z).max())
            p = float(min(1.0, len(z) * 2 * ndtr(-top)))
            kurt = float((z**4).mean() / (z**2).mean() ** 2 - 3) if (z**2).mean() > 0 else float("nan")
            rows.append(
                {
                    "assumption": "normal residual tails",
                    "check": "the largest standardized residual (Bonferroni over the combinations), excess kurtosis",
                    "result": f"largest of {len(z)}: {top:.2f} sd, p = {p:.2g}; excess kurtosis {kurt:+.2f}",
                    "p": p,
                    "action": (
                        "runs far below the others are set apart as failed runs before the fit; an outlying "
                        "combination left after that widens the intervals through the variance "
                        + ("(one is flagged here: read the intervals as approximate)" if p < 0.05 else "(none flagged)")
                    ),
                }
            )
    return pd.DataFrame(rows, columns=["assumption", "check", "result", "p", "action"])
