"""Synthetic 12-lead ECG records in the China ECG AI contest layout: the built-in demo data set.

    OUT/TRAIN/TRAIN101.mat ...   MATLAB v5, key `data`, float32 (samples, leads) in mV
    OUT/TEST/TEST101.mat ...
    OUT/reference.txt            `TRAIN101<TAB>0` per TRAIN record (0 normal, 1 abnormal), no header
    OUT/test_answers.txt         the same for TEST records: hidden truth, never read by the pipeline
    OUT/_generator.json          the generation parameters, written last (marks a complete set)

Model (numpy + scipy only, vectorized over beats, waves and samples):

* Every beat is a sum of Gaussian waves (P, Q, R, S, T; a simplified McSharry ECGSYN), each wave a
  *dipole*: an amplitude in mV along a 3-D direction (x to the patient's left, y down, z to the front).
  The heart's dipole is rotated per record (electrical axis) and scaled (body habitus).
* The dipole is projected onto nine electrodes (RA, LA, LL, V1..V6) and every noise source is added
  at the electrodes; the 12 leads are then formed as a cardiograph does (I = LA - RA, aVR = RA -
  (LA + LL) / 2, Vn = Vn - Wilson's central terminal), so Einthoven's and Goldberger's relations
  (III = II - I, aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2) hold exactly, noise included.
  The precordial electrodes look at the heart from directions rotating from right-anterior (V1) to
  left-lateral (V6), so V1 shows rS and V6 qR with an R-wave transition around V3-V4.
* Sinus rhythm 55-100 bpm with respiratory and random RR variability; QT follows Bazett (sqrt(RR));
  baseline wander (< 0.5 Hz), occasional 50 Hz mains hum, white noise and electrode offsets.
* Abnormal records are one of `ABNORMAL_CLASSES`: atrial fibrillation (irregularly irregular RR, no P
  waves, 4-9 Hz fibrillatory baseline), wide QRS (bundle-branch-block-like, QRS > 120 ms with
  discordant T), ST elevation (injury current over an anterior, inferior or lateral lead group, with
  reciprocal depression) and premature ventricular beats (3-5 early wide beats with compensatory pauses).
  Amplitude ranges overlap between classes: rhythm and morphology separate them, scale alone
  does not (a linear model on per-lead std/peak-to-peak reached only ~0.7-0.8 AUC).

`data` is stored as float32, not float64: float32 resolves about 0.1 uV at 1 mV, far below an ECG
ADC step (a few uV) and the noise modelled here; it halves the files (240 kB a record); and the
pipeline's raw feature spec is float32 anyway, so nothing the pipeline sees is lost. Real files may
hold float64, which the decoder accepts as well.

Each record has its own random stream (seed, split, index), so a record does not depend on how many
others are generated or in which order.

One file of ~400 lines on purpose: the model above is one piece (waves, electrodes, leads, noise and
the classes that alter them share their geometry), and splitting it would scatter that geometry.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import numpy as np
import scipy.io

from ecg_common.cli import CommandLineParser, add_verbose_flag, configure_logging
from ecg_common.schema import ABNORMAL, LEAD_NAMES, NORMAL, NUM_LEADS, NUM_SAMPLES, SAMPLING_RATE_HZ

GENERATOR_VERSION = 1
"""Bump when the records a given seed produces change, so existing data sets are regenerated."""

NORMAL_CLASS = "sinus_rhythm"
ABNORMAL_CLASSES = ("atrial_fibrillation", "wide_qrs", "st_elevation", "premature_ventricular_beats")

SPLITS = (("TRAIN", "reference.txt"), ("TEST", "test_answers.txt"))
"""Split directory (also the record id prefix) and its labels file, in spawn-key order."""
FIRST_ID = 101
MATRIX_KEY = "data"
PARAMS_FILE = "_generator.json"
MAINS_HZ = 50.0  # China

_DURATION_S = NUM_SAMPLES / SAMPLING_RATE_HZ
_T = np.arange(NUM_SAMPLES) / SAMPLING_RATE_HZ


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# --- Geometry: electrodes and leads -------------------------------------------------------------

# Limb electrodes RA, LA, LL on Einthoven's triangle, scaled so that lead I = (1, 0, 0) and II is a
# unit vector at +60 deg.
_LIMB_ELECTRODES = np.array([[-np.sqrt(3) / 2, -0.5, 0.0], [np.sqrt(3) / 2, -0.5, 0.0], [0.0, 1.0, 0.0]])
_LIMB_ELECTRODES /= np.sqrt(3)
_V_ANGLES_DEG = np.array([115.0, 90.0, 75.0, 60.0, 30.0, 0.0])  # horizontal (x, z) plane, from the left
_V_GAINS = np.array([1.0, 1.4, 1.5, 1.6, 1.4, 1.0])  # chest electrodes sit closer to the heart
_V_DOWN = np.array([0.0, 0.0, 0.05, 0.1, 0.15, 0.15])  # V4-V6 sit slightly lower

_ELECTRODES = ("RA", "LA", "LL", "V1", "V2", "V3", "V4", "V5", "V6")
_LEAD_WEIGHTS = {  # lead = weights . electrode potentials (a cardiograph's wiring)
    "I": {"LA": 1, "RA": -1},
    "II": {"LL": 1, "RA": -1},
    "III": {"LL": 1, "LA": -1},
    "aVR": {"RA": 1, "LA": -0.5, "LL": -0.5},
    "aVL": {"LA": 1, "RA": -0.5, "LL": -0.5},
    "aVF": {"LL": 1, "RA": -0.5, "LA": -0.5},
    **{f"V{i}": {f"V{i}": 1, "RA": -1 / 3, "LA": -1 / 3, "LL": -1 / 3} for i in range(1, 7)},
}
_LEAD_MATRIX = np.array([[_LEAD_WEIGHTS[lead].get(e, 0.0) for e in _ELECTRODES] for lead in LEAD_NAMES])
assert _LEAD_MATRIX.shape == (NUM_LEADS, len(_ELECTRODES))


def _electrode_vectors(rng: np.random.Generator) -> np.ndarray:
    """(9, 3) lead-field vectors; chest electrode placement varies a little between records."""
    angles = np.deg2rad(_V_ANGLES_DEG + rng.normal(0, 5, 6))
    chest = np.stack([np.cos(angles), _V_DOWN, np.sin(angles)], axis=1)
    chest *= (_V_GAINS * rng.uniform(0.85, 1.15, 6))[:, None]
    return np.vstack([_LIMB_ELECTRODES, chest])


# --- One beat: Gaussian waves as dipoles ----------------------------------------------------------

# wave: (offset from the R peak in s, width sigma in s, amplitude in mV, direction (left, down, front))
_SINUS_WAVES = {
    "P": (-0.17, 0.022, 0.15, (0.55, 0.80, 0.20)),
    "Q": (-0.028, 0.009, 0.12, (-0.60, 0.10, 0.80)),  # septum: rightward and anterior (q in V6, r in V1)
    "R": (0.0, 0.011, 1.3, (0.60, 0.60, -0.25)),  # left ventricle: left, down, back (R in II/V5, S in V1)
    "S": (0.030, 0.011, 0.30, (-0.50, -0.50, -0.60)),  # late: base, right, back
    "T": (0.27, 0.05, 0.30, (0.60, 0.55, 0.45)),
}
_REPOLARIZATION = {"T", "ST1", "ST2"}
"""Waves whose offset scales with sqrt(preceding RR) (Bazett); depolarization keeps its timing."""

_ST_DIRECTIONS = {  # injury current towards the leads that show the elevation
    "anterior": (0.0, 0.2, 1.0),  # V1-V4
    "inferior": (0.1, 1.0, -0.1),  # II, III, aVF (reciprocal in aVL)
    "lateral": (1.0, -0.3, -0.1),  # I, aVL, V5, V6 (reciprocal in III)
}

Waves = dict  # name -> (offset_s, sigma_s, dipole (3,) in mV)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """The record's electrical axis: a frontal (+-30 deg) then a horizontal (+-20 deg) rotation."""
    a, b = np.deg2rad(rng.uniform(-30, 30)), np.deg2rad(rng.uniform(-20, 20))
    frontal = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    horizontal = np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])
    return horizontal @ frontal


def _sinus_waves(rng: np.random.Generator) -> Waves:
    """The record's conducted beat: the template with per-wave timing, width and amplitude jitter."""
    waves = {}
    for name, (offset, sigma, amp, direction) in _SINUS_WAVES.items():
        waves[name] = (
            offset * rng.uniform(0.9, 1.1),
            sigma * rng.uniform(0.85, 1.15),
            amp * rng.uniform(0.75, 1.25) * _unit(direction),
        )
    return waves


def _widen_qrs(rng: np.random.Generator, waves: Waves) -> Waves:
    """Bundle-branch-block-like: slow ventricular activation (QRS > 120 ms), secondary T discordance."""
    stretch, widen = rng.uniform(1.6, 2.0), rng.uniform(2.0, 2.8)
    waves = dict(waves)
    for name in "QRS":
        offset, sigma, dipole = waves[name]
        waves[name] = (offset * stretch, sigma * widen, dipole)
    if rng.random() < 0.5:  # left-bundle-like: no septal q
        del waves["Q"]
    offset, sigma, t_dipole = waves["T"]
    waves["T"] = (offset, sigma, -np.linalg.norm(t_dipole) * _unit(waves["R"][2]))
    return waves


def _elevate_st(rng: np.random.Generator, waves: Waves) -> Waves:
    """Acute injury current: an ST plateau (two merged Gaussians) and a taller T over one lead group."""
    direction = _unit(_ST_DIRECTIONS[rng.choice(sorted(_ST_DIRECTIONS))])
    amp = rng.uniform(0.2, 0.45)
    offset, sigma, t_dipole = waves["T"]
    return {
        **waves,
        "ST1": (0.09, 0.03, amp * direction),
        "ST2": (0.16, 0.04, amp * direction),
        "T": (offset, sigma, t_dipole + 0.5 * amp * direction),
    }


def _pvc_waves(rng: np.random.Generator) -> Waves:
    """An ectopic ventricular beat: no P, a wide bizarre QRS in a random direction, a discordant T."""
    main, late = _unit(rng.normal(size=3)), _unit(rng.normal(size=3))
    return {
        "R": (0.0, rng.uniform(0.035, 0.05), rng.uniform(1.5, 2.5) * main),
        "R2": (0.05, 0.03, 0.5 * late),
        "Tv": (0.32, 0.06, -0.45 * main),  # not in _REPOLARIZATION: the coupling interval is not a cycle
    }


def _product(subscripts: str, *operands: np.ndarray) -> np.ndarray:
    """`np.einsum` without BLAS: these products are small, and a multi-threaded BLAS spinning on
    them is ten times slower on a busy machine (measured: 18 vs 184 records/s on 2 loaded cores)."""
    return np.einsum(subscripts, *operands, optimize=False)


def _render(beat_times: np.ndarray, rr: np.ndarray, gains: np.ndarray, waves: Waves) -> np.ndarray:
    """The (3, NUM_SAMPLES) heart dipole of beats with R peaks at `beat_times` (s)."""
    if beat_times.size == 0:
        return np.zeros((3, NUM_SAMPLES))
    names = list(waves)
    offset = np.array([waves[n][0] for n in names])
    sigma = np.array([waves[n][1] for n in names])
    dipole = np.stack([waves[n][2] for n in names])  # (W, 3)
    scaled = np.array([n in _REPOLARIZATION for n in names])
    centers = beat_times[:, None] + np.where(scaled, offset * np.sqrt(rr)[:, None], offset)  # (B, W)
    shapes = np.exp(-0.5 * ((_T - centers[..., None]) / sigma[:, None]) ** 2)  # (B, W, N)
    weights = gains[:, None, None] * dipole[None]  # (B, W, 3)
    return _product("bwd,bwn->dn", weights, shapes)


# --- Rhythm ----------------------------------------------------------------------------------------


def _beats(rng: np.random.Generator, rr_mean: float, irregular: bool) -> tuple[np.ndarray, np.ndarray]:
    """R-peak times (s) covering the record (and a beat before it) with each beat's preceding RR."""
    n = int(np.ceil((_DURATION_S + 2.0) / (0.5 * rr_mean))) + 2
    if irregular:  # atrial fibrillation: independent, widely spread intervals
        rr = rr_mean * np.exp(rng.normal(0.0, rng.uniform(0.2, 0.35), n))
    else:  # sinus: respiratory sinus arrhythmia plus beat-to-beat jitter
        phase = 2 * np.pi * rng.uniform(0.15, 0.35) * rr_mean * np.arange(n) + rng.uniform(0, 2 * np.pi)
        rr = rr_mean * (1 + rng.uniform(0.01, 0.05) * np.sin(phase) + rng.normal(0.0, 0.015, n))
    rr = np.clip(rr, 0.3, 2.0)
    times = rng.uniform(-rr_mean, 0.0) + np.concatenate([[0.0], np.cumsum(rr[1:])])
    keep = (times > -0.7) & (times < _DURATION_S + 0.3)
    return times[keep], rr[keep]


def _fibrillatory_waves(rng: np.random.Generator) -> np.ndarray:
    """(3, N) atrial f-waves: 2-3 frequency-wandering 4-9 Hz components, strongest in V1 and II."""
    k = rng.integers(2, 4)
    freq = rng.uniform(4.0, 9.0, (k, 1)) + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4, (k, 1)) * _T)
    phase = 2 * np.pi * np.cumsum(freq, axis=1) / SAMPLING_RATE_HZ + rng.uniform(0, 2 * np.pi, (k, 1))
    envelope = 1 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5, (k, 1)) * _T + rng.uniform(0, 6.3, (k, 1)))
    f = (rng.uniform(0.04, 0.09, (k, 1)) * envelope * np.sin(phase)).sum(axis=0)
    return _unit(np.array([-0.3, 0.6, 0.8]) + rng.normal(0, 0.2, 3))[:, None] * f


def _electrode_noise(rng: np.random.Generator) -> np.ndarray:
    """(9, N) baseline wander (< 0.5 Hz), offsets, white noise and, in 30% of records, mains hum."""
    shape = (len(_ELECTRODES), 2, 1)
    wander = rng.uniform(0, 0.12, shape) * np.sin(
        2 * np.pi * rng.uniform(0.05, 0.5, shape) * _T + rng.uniform(0, 2 * np.pi, shape)
    )
    noise = wander.sum(axis=1) + rng.normal(0, 0.05, (len(_ELECTRODES), 1))
    noise += rng.normal(0, rng.uniform(0.005, 0.02), (len(_ELECTRODES), NUM_SAMPLES))
    if rng.random() < 0.3:
        hum_phase = rng.uniform(0, 2 * np.pi) + rng.normal(0, 0.3, (len(_ELECTRODES), 1))
        hum = np.sin(2 * np.pi * MAINS_HZ * _T + hum_phase)
        noise += rng.uniform(0.005, 0.04, (len(_ELECTRODES), 1)) * hum
    return noise


# --- Public API ------------------------------------------------------------------------------------


def synthesize_record(
    rng: np.random.Generator, label: int, *, abnormality: str | None = None
) -> tuple[np.ndarray, str]:
    """One 10 s record: the (NUM_SAMPLES, NUM_LEADS) float32 array in mV and its class name.

    A NORMAL record is sinus rhythm; an ABNORMAL one is a random class of `ABNORMAL_CLASSES`, or
    `abnormality` when given (tests and demos use it to pick one).
    """
    if label == NORMAL:
        if abnormality is not None:
            raise ValueError("a normal record has no abnormality")
        kind = NORMAL_CLASS
    elif label == ABNORMAL:
        kind = abnormality if abnormality is not None else str(rng.choice(ABNORMAL_CLASSES))
        if kind not in ABNORMAL_CLASSES:
            raise ValueError(f"unknown abnormality {kind!r}; expected one of {ABNORMAL_CLASSES}")
    else:
        raise ValueError(f"label must be {NORMAL} or {ABNORMAL}, got {label!r}")

    return _synthesize(rng, (kind,)), kind


def synthesize_multilabel_record(rng: np.random.Generator, kinds: Sequence[str]) -> np.ndarray:
    """One 10 s record showing every abnormality of `kinds` at once (none: sinus rhythm), for
    multi-label data: AF with a wide QRS, ST elevation and premature ventricular beats, and so on."""
    unknown = set(kinds) - set(ABNORMAL_CLASSES)
    if unknown:
        raise ValueError(f"unknown abnormalities {sorted(unknown)}; expected some of {ABNORMAL_CLASSES}")
    return _synthesize(rng, tuple(kinds))


def _synthesize(rng: np.random.Generator, kinds: tuple[str, ...]) -> np.ndarray:
    """The signal of `synthesize_record`, with each abnormality of `kinds` applied in a fixed order (a
    single one draws the same random numbers as it always did, so the binary data set is unchanged)."""
    rotation, gain = _rotation(rng), rng.uniform(0.6, 1.5)
    waves = _sinus_waves(rng)
    af = "atrial_fibrillation" in kinds
    hr = rng.uniform(60, 110) if af else rng.uniform(55, 100)
    times, rr = _beats(rng, 60.0 / hr, irregular=af)
    beat_gain = 1 + rng.normal(0, 0.03, times.size)
    heart = np.zeros((3, NUM_SAMPLES))

    if af:
        del waves["P"]
        heart += _fibrillatory_waves(rng)
    if "wide_qrs" in kinds:
        waves = _widen_qrs(rng, waves)
    if "st_elevation" in kinds:
        waves = _elevate_st(rng, waves)
    if "premature_ventricular_beats" in kinds:
        inside = np.flatnonzero((times > 0.5) & (times < _DURATION_S - 0.5))
        inside = inside[inside >= 1][rng.integers(2) :: 2]  # every other beat: never two in a row
        chosen = rng.choice(inside, size=min(rng.integers(3, 6), inside.size), replace=False)
        coupling = rng.uniform(0.55, 0.75, chosen.size) * rr[chosen]
        pvc_times = times[chosen - 1] + coupling  # the next sinus beat keeps its time: compensatory pause
        heart += _render(pvc_times, coupling, np.ones(chosen.size), _pvc_waves(rng))
        sinus = np.setdiff1d(np.arange(times.size), chosen)
        times, rr, beat_gain = times[sinus], rr[sinus], beat_gain[sinus]

    heart += _render(times, rr, beat_gain, waves)
    lead_field = _electrode_vectors(rng) @ (gain * rotation)  # (9, 3): each electrode's view of this heart
    electrodes = _product("ed,dn->en", lead_field, heart) + _electrode_noise(rng)
    return _product("le,en->nl", _LEAD_MATRIX, electrodes).astype(np.float32)


MULTILABEL_CODES = {"atrial_fibrillation": "164889003", "wide_qrs": "59118001", "st_elevation": "164931005",
                    "premature_ventricular_beats": "427172004"}
"""Multi-label data: the SNOMED CT code written for each abnormality (AF, RBBB as the wide QRS, ST
elevation, PVC); a record without any is sinus rhythm, `SINUS_CODE`."""
SINUS_CODE = "426783006"


def generate_multilabel_dataset(output_dir: str, n_train: int, n_test: int, seed: int = 0,
                                prevalence: float = 0.35) -> None:
    """The contest layout with multi-label records: each abnormality present independently with
    `prevalence`, several at once as they come; `reference.txt` / `test_answers.txt` hold
    `id<TAB>code,code` (MULTILABEL_CODES, SINUS_CODE for none), the multi-label labels format."""
    for split_index, ((split, labels_file), n) in enumerate(zip(SPLITS, (n_train, n_test))):
        split_dir = os.path.join(output_dir, split)
        os.makedirs(split_dir, exist_ok=True)
        lines = []
        for i, number in enumerate(_ids(n)):
            rng = _rng(seed, split_index, i)
            kinds = tuple(k for k in ABNORMAL_CLASSES if rng.random() < prevalence)
            record_id = f"{split}{number}"
            scipy.io.savemat(os.path.join(split_dir, f"{record_id}.mat"),
                             {MATRIX_KEY: synthesize_multilabel_record(rng, kinds)})
            lines.append(f"{record_id}\t{','.join(MULTILABEL_CODES[k] for k in kinds) or SINUS_CODE}\n")
        with open(os.path.join(output_dir, labels_file), "w") as f:
            f.writelines(lines)


def generate_dataset(
    output_dir: str, n_train: int, n_test: int, seed: int = 0, abnormal_fraction: float = 0.5
) -> None:
    """Writes the contest layout under `output_dir`, or does nothing if it already holds this set."""
    _generate(output_dir, n_train, n_test, seed, abnormal_fraction)


def _labels(rng: np.random.Generator, n: int, abnormal_fraction: float) -> np.ndarray:
    """`round(n * fraction)` abnormal labels in random order; both classes when 0 < fraction < 1, n >= 2."""
    n_abnormal = int(round(n * abnormal_fraction))
    if n >= 2 and 0 < abnormal_fraction < 1:
        n_abnormal = min(max(n_abnormal, 1), n - 1)
    return rng.permutation(np.where(np.arange(n) < n_abnormal, ABNORMAL, NORMAL))


def _ids(n: int) -> range:
    """The numeric parts of a split's record ids: 101, 102, ... like the contest."""
    return range(FIRST_ID, FIRST_ID + n)


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent stream per (seed, split) and (seed, split, record).

    `default_rng([seed, split])` would not do: integer lists that differ only in trailing zeros
    (`[0, 0]`, `[0]`, `0`) seed the same stream, whereas spawn keys `(0,)` and `(0, 0)` differ.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _is_complete(output_dir: str, params: dict) -> bool:
    try:
        with open(os.path.join(output_dir, PARAMS_FILE)) as f:
            if json.load(f) != params:
                return False
    except (OSError, ValueError):
        return False
    counts = (params["n_train"], params["n_test"])
    return all(
        os.path.isfile(os.path.join(output_dir, labels_file))
        and all(os.path.isfile(os.path.join(output_dir, split, f"{split}{i}.mat")) for i in _ids(n))
        for (split, labels_file), n in zip(SPLITS, counts)
    )


def _generate(output_dir: str, n_train: int, n_test: int, seed: int, abnormal_fraction: float) -> bool:
    """`generate_dataset`; returns False when an existing complete set was reused."""
    if min(n_train, n_test) < 0 or seed < 0 or not 0 <= abnormal_fraction <= 1:
        raise ValueError("need n_train, n_test, seed >= 0 and 0 <= abnormal_fraction <= 1")
    params = {
        "generator_version": GENERATOR_VERSION,
        "n_train": int(n_train),
        "n_test": int(n_test),
        "seed": int(seed),
        "abnormal_fraction": float(abnormal_fraction),
    }
    if _is_complete(output_dir, params):
        return False
    marker = os.path.join(output_dir, PARAMS_FILE)
    if os.path.exists(marker):
        os.remove(marker)  # an interrupted run must not look complete
    for split_index, ((split, labels_file), n) in enumerate(zip(SPLITS, (n_train, n_test))):
        split_dir = os.path.join(output_dir, split)
        os.makedirs(split_dir, exist_ok=True)
        for name in os.listdir(split_dir):  # records of an earlier, larger set
            match = re.fullmatch(rf"{split}(\d+)\.mat", name)
            if match and int(match.group(1)) not in _ids(n):
                os.remove(os.path.join(split_dir, name))
        labels = _labels(_rng(seed, split_index), n, abnormal_fraction)
        lines = []
        for i, (number, label) in enumerate(zip(_ids(n), labels)):
            ecg, _ = synthesize_record(_rng(seed, split_index, i), int(label))
            record_id = f"{split}{number}"
            scipy.io.savemat(os.path.join(split_dir, f"{record_id}.mat"), {MATRIX_KEY: ecg})
            lines.append(f"{record_id}\t{label}\n")
        with open(os.path.join(output_dir, labels_file), "w") as f:
            f.writelines(lines)
    with open(marker, "w") as f:
        json.dump(params, f, indent=2)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = CommandLineParser(prog="python -m beam_pipeline.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--train", type=int, default=600, help="number of TRAIN records")
    parser.add_argument("--test", type=int, default=400, help="number of TEST records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--abnormal_fraction", type=float, default=0.5)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    configure_logging("beam_pipeline", args.verbose)
    try:
        wrote = _generate(args.output_dir, args.train, args.test, args.seed, args.abnormal_fraction)
    except ValueError as e:
        parser.error(str(e))
    what = f"{args.train} TRAIN + {args.test} TEST records (seed {args.seed})"
    if wrote:
        print(f"Wrote {what} to {args.output_dir}")
    else:
        print(f"Reusing the complete synthetic data set in {args.output_dir}: {what}")
    return 0
