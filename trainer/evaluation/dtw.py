"""MFCC + dynamic time warping: the classic personal-wake-word baseline, in numpy.

Why it is here: template matching with DTW is what a wake word "trained" from three takes
meant before learned embeddings, and it needs no training data at all, so it is the floor
any encoder must clear. Features are the DCT of the device's own log-mel (13 coefficients,
per-utterance mean removed), so the baseline hears exactly what the encoder hears.

DTW is O(n m) per pair and numba is not available, so the dynamic programme is vectorised
over a batch of thousands of pairs (arrays laid out ``[row, column, pair]``): the vertical and
diagonal predecessors of a whole row come in one vector operation, and only the horizontal
recurrence along the row steps cell by cell, each step one vector operation over every pair.
(NumPy's ``cumsum``/``minimum.accumulate`` along a leading axis are not vectorised across the
other axis and measured 6x slower than this explicit loop.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from device.frontend import FrontendConfig, log_mel
from device.vad import trim_silence
from trainer.evaluation.forked import fork_imap, shared

DTW_LABEL = "MFCC+DTW"
NUM_CEPS = 13
_MAX_BATCH_CELLS = 32_000_000  # pairs x rows x columns per batch (~128 MB of float32 costs): ~5k pairs


def dct_matrix(num_mels: int, num_ceps: int = NUM_CEPS) -> np.ndarray:
    """Orthonormal DCT-II basis ``[num_mels, num_ceps]`` (what MFCC means by "cepstrum")."""
    n = np.arange(num_mels)
    k = np.arange(num_ceps)
    basis = np.cos(np.pi / num_mels * (n[:, None] + 0.5) * k[None, :]) * np.sqrt(2.0 / num_mels)
    basis[:, 0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def mfcc(samples: np.ndarray, frontend: FrontendConfig | None = None, num_ceps: int = NUM_CEPS) -> np.ndarray:
    """``[frames, num_ceps]`` mean-normalised MFCCs of the trimmed utterance (device log-mel + DCT).

    Mean normalisation removes the channel (microphone, 8 kHz telephone band) so templates
    from one recording setup still match another as well as DTW can.
    """
    frontend = frontend or FrontendConfig()
    speech = trim_silence(np.asarray(samples, dtype=np.float32), frontend.sample_rate)
    mel = log_mel(speech, frontend)
    if len(mel) == 0:  # shorter than one frame: one frame of silence, so DTW stays defined
        mel = np.full((1, frontend.num_mels), np.log(frontend.log_floor), np.float32)
    ceps = mel @ dct_matrix(frontend.num_mels, num_ceps)
    return (ceps - ceps.mean(axis=0, keepdims=True)).astype(np.float32)


def _pad(sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    out = np.zeros((len(sequences), int(lengths.max()), sequences[0].shape[1]), np.float32)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = s
    return out, lengths


def _distances_from_products(products: np.ndarray, left_sq: np.ndarray, right_sq: np.ndarray) -> np.ndarray:
    """Euclidean distances from dot products and squared norms (broadcast), in place: ``sqrt(|a|^2 + |b|^2 - 2 a.b)``.

    One batched matrix product instead of a difference per pair of frames; rounding can make a
    tiny squared distance negative, hence the clamp at 0.
    """
    products *= -2.0
    products += left_sq
    products += right_sq
    np.maximum(products, 0.0, out=products)
    return np.sqrt(products, out=products)


def _band_mask(n: int, m: int, la: np.ndarray, lb: np.ndarray, band: float) -> np.ndarray:
    """Sakoe-Chiba band ``[P, n, m]``: cell (i, j) allowed when |j - i*lb/la| <= band * max(la, lb) + 1."""
    i = np.arange(n)[None, :, None]
    j = np.arange(m)[None, None, :]
    slope = (lb / la)[:, None, None]
    width = (band * np.maximum(la, lb))[:, None, None] + 1.0
    return np.abs(j - i * slope) <= width


def dtw_batch(
    a: Sequence[np.ndarray], b: Sequence[np.ndarray], band: float | None = None, normalise: bool = True
) -> np.ndarray:
    """DTW distance of each pair ``(a[p], b[p])`` of ``[frames, dims]`` sequences (Euclidean local cost).

    Steps are the usual three (down, right, diagonal), each adding the cost of the cell it
    enters. ``band`` (a fraction of the longer length) limits the warp to a Sakoe-Chiba band;
    ``normalise`` divides by ``len(a) + len(b)`` so long and short templates compare fairly.
    Padding is harmless: a cell only depends on cells above and to its left, and each pair's
    answer is read at its own last cell. Arrays are laid out ``[row, column, pair]`` so every
    step of the programme is a contiguous vector operation over all pairs (float32: the
    distances are compared, not accumulated further, and float32 halves the memory traffic).
    """
    if len(a) != len(b):
        raise ValueError(f"need as many left as right sequences, got {len(a)} and {len(b)}")
    if len(a) == 0:
        return np.zeros(0)
    x, la = _pad(a)
    y, lb = _pad(b)
    pairs, n, m = len(a), x.shape[1], y.shape[1]
    # local costs [n, m, P]: |x|^2 + |y|^2 - 2 x.y, one batched matmul
    cost = _distances_from_products(
        np.matmul(x, y.transpose(0, 2, 1)), np.sum(x * x, axis=2)[:, :, None], np.sum(y * y, axis=2)[:, None, :]
    )
    if band is not None:  # an infinite cost keeps every path out of the cell
        cost[~_band_mask(n, m, la, lb, band)] = np.inf
    cost = np.ascontiguousarray(cost.transpose(1, 2, 0))
    result = np.empty(pairs)
    columns = np.arange(pairs)
    entry = np.empty((m, pairs), np.float32)
    current = np.empty((m, pairs), np.float32)
    for i in range(n):
        row = cost[i]
        if i == 0:  # first row: only moves to the right
            np.cumsum(row, axis=0, out=current)
        else:  # D[i, j] = c[i, j] + min(D[i-1, j], D[i-1, j-1], D[i, j-1])
            np.minimum(current[1:], current[:-1], out=entry[1:])
            entry[0] = current[0]
            np.add(entry[0], row[0], out=current[0])
            for j in range(1, m):  # the only sequential part: one vector op pair per cell, over all pairs
                np.minimum(entry[j], current[j - 1], out=current[j])
                current[j] += row[j]
        done = np.nonzero(la - 1 == i)[0]
        if len(done):
            result[done] = current[lb[done] - 1, columns[done]]
    if normalise:
        result /= la + lb
    return result


def _slope_limited_match(cost: np.ndarray) -> np.ndarray:
    """Best open-begin, open-end match of the rows (template) in the columns, per pair: ``[pairs]`` cost / length.

    ``cost`` is ``[rows, columns, pairs]`` (or any view with that shape). Steps (1, 1), (1, 2) and
    (2, 1) keep the warp between half and twice the template's pace: with free vertical steps a
    whole template could collapse onto one frame of noise that resembles its mean. A step adds
    the cost of every cell it passes, and the answer is the path's cost over its cell count, so
    long and short templates, and fast and slow matches, share one scale. Each row needs only
    the two before it, so a row is a handful of vector operations over every column and pair.
    """
    rows, columns, pairs = cost.shape
    inf = np.float32(np.inf)
    two_back = np.full((columns, pairs), inf, np.float32)
    two_back_length = np.ones((columns, pairs), np.float32)
    previous = np.array(cost[0], np.float32)  # a match may begin at any column
    previous_length = np.ones((columns, pairs), np.float32)
    for i in range(1, rows):
        row = np.asarray(cost[i], np.float32)
        best = np.full((columns, pairs), inf, np.float32)
        length = np.zeros((columns, pairs), np.float32)
        candidates = [
            (1, previous, previous_length, row[1:], 1),  # diagonal
            (2, previous, previous_length, row[2:] + row[1:-1], 2),  # two columns for one row
        ]
        if i >= 2:
            candidates.append((1, two_back, two_back_length, row[1:] + np.asarray(cost[i - 1], np.float32)[1:], 2))
        for shift, source, source_length, step_cost, cells in candidates:
            total = source[:-shift] + step_cost
            better = total < best[shift:]
            np.copyto(best[shift:], total, where=better)
            np.copyto(length[shift:], source_length[:-shift] + np.float32(cells), where=better)
        two_back, two_back_length = previous, previous_length
        previous, previous_length = best, np.maximum(length, 1.0)
    return (previous / previous_length).min(axis=0).astype(np.float64)


def subsequence_dtw(template: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Best match of ``template [n, d]`` anywhere inside each of ``windows [B, m, d]``: ``[B]`` mean cell costs.

    Keyword spotting with templates: the word may start and end anywhere in the window (open
    begin and end); the warp is slope-limited (:func:`_slope_limited_match`).
    """
    windows = np.asarray(windows, np.float32)
    template = np.asarray(template, np.float32)
    cost = _distances_from_products(
        np.einsum("nd,bmd->nmb", template, windows),
        np.sum(template * template, axis=1)[:, None, None],
        np.sum(windows * windows, axis=2).T[None, :, :],
    )
    return _slope_limited_match(cost)


def subsequence_dtw_windows(
    template: np.ndarray, frames: np.ndarray, window: int, hop: int, block: int = 8000
) -> np.ndarray:
    """:func:`subsequence_dtw` of ``template`` in each window ``frames[e - window : e]``, ``e = window + k hop``.

    Streaming windows overlap, so the local costs are computed once for the whole stream
    (``[n, frames]``) and every window is a strided view of them: no cost is computed twice.
    """
    template = np.asarray(template, np.float32)
    frames = np.asarray(frames, np.float32)
    local = _distances_from_products(
        template @ frames.T, np.sum(template * template, axis=1)[:, None], np.sum(frames * frames, axis=1)[None, :]
    )  # [n, frames]
    count = max(0, (len(frames) - window) // hop + 1)
    out = np.empty(count)
    row_stride, column_stride = local.strides
    for first in range(0, count, block):
        windows = min(block, count - first)
        cost = np.lib.stride_tricks.as_strided(
            local[:, first * hop :],
            shape=(len(template), window, windows),
            strides=(row_stride, column_stride, hop * column_stride),
            writeable=False,
        )  # cost[i, j, b] = local[i, (first + b) * hop + j]
        out[first : first + windows] = _slope_limited_match(cost)
    return out


def subsequence_dtw_reference(template: np.ndarray, window: np.ndarray) -> float:
    """Plain double-loop version of :func:`subsequence_dtw`, the definition the fast one must match."""
    n, m = len(template), len(window)
    c = np.array([[np.linalg.norm(template[i] - window[j]) for j in range(m)] for i in range(n)])
    d = np.full((n, m), np.inf)
    length = np.ones((n, m))
    d[0] = c[0]
    for i in range(1, n):
        for j in range(m):
            options = []
            if j >= 1:
                options.append((d[i - 1, j - 1] + c[i, j], length[i - 1, j - 1] + 1))
            if j >= 2:
                options.append((d[i - 1, j - 2] + c[i, j - 1] + c[i, j], length[i - 1, j - 2] + 2))
            if i >= 2 and j >= 1:
                options.append((d[i - 2, j - 1] + c[i - 1, j] + c[i, j], length[i - 2, j - 1] + 2))
            if options:
                d[i, j], length[i, j] = min(options, key=lambda o: o[0])
    return float(np.min(d[-1] / length[-1]))


def dtw_pairs(
    sequences: Sequence[np.ndarray],
    pairs: np.ndarray,
    band: float | None = None,
    progress: bool = False,
    desc: str = "DTW pairs",
) -> np.ndarray:
    """Distances for index pairs ``[P, 2]`` into ``sequences``, batched by length to keep padding small."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    lengths = np.array([len(s) for s in sequences])
    order = np.lexsort((lengths[pairs[:, 1]], lengths[pairs[:, 0]]))
    out = np.empty(len(pairs))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc=desc, unit="pair", leave=False)
    start = 0
    while start < len(order):
        # grow the batch (256 pairs at a time) while its padded size stays within the cell budget
        stop = start + 1
        m = lengths[pairs[order[start], 1]]
        while stop < len(order):
            end = min(len(order), stop + 256)
            n_new = lengths[pairs[order[end - 1], 0]]  # sorted: the last pair has the longest left side
            m_new = max(m, int(lengths[pairs[order[stop:end], 1]].max()))
            if (end - start) * n_new * m_new > _MAX_BATCH_CELLS:
                break
            stop, m = end, m_new
        batch = order[start:stop]
        out[batch] = dtw_batch(
            [sequences[i] for i in pairs[batch, 0]], [sequences[j] for j in pairs[batch, 1]], band=band
        )
        if bar is not None:
            bar.update(len(batch))
        start = stop
    if bar is not None:
        bar.close()
    return out


def dtw_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Plain double-loop DTW (unnormalised), the textbook definition the fast version must match."""
    n, m = len(a), len(b)
    d = np.full((n + 1, m + 1), np.inf)
    d[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c = float(np.linalg.norm(a[i - 1] - b[j - 1]))
            d[i, j] = c + min(d[i - 1, j], d[i, j - 1], d[i - 1, j - 1])
    return float(d[n, m])


def _worker_pairs(args: tuple[np.ndarray, float | None]) -> np.ndarray:
    pairs, band = args
    return dtw_pairs(shared(), pairs, band=band)


def parallel_dtw_pairs(
    sequences: Sequence[np.ndarray], pairs: np.ndarray, band: float | None = None, workers: int = 0
) -> np.ndarray:
    """:func:`dtw_pairs` split over forked worker processes (0 = every core), with a progress bar."""
    import os

    from tqdm import tqdm

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(pairs) < 20_000:
        return dtw_pairs(sequences, pairs, band=band, progress=True)
    lengths = np.array([len(s) for s in sequences])
    order = np.lexsort((lengths[pairs[:, 1]], lengths[pairs[:, 0]]))  # similar lengths share a chunk
    chunks = np.array_split(order, max(workers * 4, len(pairs) // 20_000))
    out = np.empty(len(pairs))
    computed = fork_imap(_worker_pairs, [(pairs[c], band) for c in chunks], sequences, workers)
    with tqdm(total=len(pairs), desc="DTW pairs", unit="pair", leave=False) as bar:
        for chunk, distances in zip(chunks, computed, strict=True):
            out[chunk] = distances
            bar.update(len(chunk))
    return out


class DTWScorer:
    """Few-shot scorer: class score = minus the min (or mean) DTW distance to the class's support takes.

    ``prepare`` computes every (query, support) distance the episodes will ask for, once
    (DTW is symmetric, so each unordered pair once), in parallel; ``scores`` is then lookup.
    """

    def __init__(
        self,
        features: Sequence[np.ndarray],
        label: str = "MFCC+DTW",
        aggregate: str = "min",
        band: float | None = None,
        workers: int = 0,
    ) -> None:
        if aggregate not in ("min", "mean"):
            raise ValueError(f"aggregate must be min or mean, got {aggregate!r}")
        self.features = list(features)
        self.label = label
        self.aggregate = aggregate
        self.band = band
        self.workers = workers
        self._keys = np.zeros(0, np.int64)
        self._distances = np.zeros(0)
        self.pairs_computed = 0

    def _key(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        low, high = np.minimum(a, b), np.maximum(a, b)
        return low.astype(np.int64) * len(self.features) + high

    def prepare(self, episodes: Sequence) -> None:
        keys = [self._keys]
        for episode in episodes:
            q = episode.all_queries
            s = episode.support.reshape(-1)
            keys.append(self._key(np.repeat(q, len(s)), np.tile(s, len(q))))
        wanted = np.unique(np.concatenate(keys))
        new = wanted[~np.isin(wanted, self._keys)]
        if len(new):
            n = len(self.features)
            distances = parallel_dtw_pairs(self.features, np.stack([new // n, new % n], 1), self.band, self.workers)
            self.pairs_computed += len(new)
            keys_all = np.concatenate([self._keys, new])
            order = np.argsort(keys_all)
            self._keys = keys_all[order]
            self._distances = np.concatenate([self._distances, distances])[order]

    def scores(self, support: np.ndarray, queries: np.ndarray) -> np.ndarray:
        ways, shots = support.shape
        q = np.repeat(queries, ways * shots)
        s = np.tile(support.reshape(-1), len(queries))
        keys = self._key(q, s)
        found = np.searchsorted(self._keys, keys)
        if np.any(found >= len(self._keys)) or np.any(self._keys[np.minimum(found, len(self._keys) - 1)] != keys):
            raise KeyError("DTW distance requested for a pair that prepare() did not compute")
        distances = self._distances[found].reshape(len(queries), ways, shots)
        pooled = distances.min(axis=2) if self.aggregate == "min" else distances.mean(axis=2)
        return -pooled
