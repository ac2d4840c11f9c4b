"""The masked-diffusion denoising loop (``diffusion_generate`` in examples/diffusion).

One loop for every model: the model is reached only through ``logits_fn``. With
``params.corrected = False`` the result equals llama.cpp's reference token for token
(same seed, same logits); ``corrected = True`` fixes its defects (see docs/diffusion.md).

Differences from the reference that do not change the tokens:

* a step whose block has no masked position left skips the model call (the reference
  decodes, then breaks);
* a step callback returning False stops the whole run within that step. (The reference
  only leaves the current block and goes on with the next one.)

``params.early_stop`` (with the end-of-generation ids) and ``threshold`` / ``factor`` run fewer
forwards (sampling/early_stop.py, sampling/parallel.py); the first keeps the answer unchanged.
"""
from __future__ import annotations

import math
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional, Union

import numpy as np

from ._dist import dist_repeated
from .confidence import confidence, entropy_bounds
from .filters import apply_chain
from .gumbel import corrected_gumbel_rows, reference_gumbel_row0
from .params import Algorithm, DiffusionParams, Schedule
from .random import LLAMA_DEFAULT_SEED, MT19937Stream, normalize_seed
from .early_stop import AnswerEnd
from .parallel import certainty, parallel_rule
from .ranking import top_k_by_bounds, without_replacement
from .rows import RowLogits, fetch_rows
from .schedules import (check_run_args, get_num_transfer_tokens, plan_block_schedule,
                        timestep_transfer_count, validate_params)

__all__ = ["LogitsFn", "StepCallback", "DiffusionResult", "run_diffusion", "CHUNK_ROWS"]

#: tokens int32 [canvas] -> float32 [canvas, n_vocab], or a RowLogits (sampling/rows.py: only the
#: rows a step needs); may be a view valid until the next call.
LogitsFn = Union[Callable[[np.ndarray], np.ndarray], RowLogits]
#: (step, total_steps, canvas tokens int32 [canvas]) -> False to cancel.
StepCallback = Callable[[int, int, np.ndarray], Optional[bool]]

#: masked rows in flight at once (over all threads); bounds temporaries to CHUNK_ROWS x n_vocab.
CHUNK_ROWS = 32
#: below this many logits per step (masked rows x n_vocab) one thread samples alone; so it
#: does with top-k (see _State._sample).
_THREADED_MIN_VALUES = 1 << 18


@dataclass
class DiffusionResult:
    """tokens: int32 [canvas] (prompt included); steps_run: steps that called the model;
    cancelled: a callback returned False; decode_seconds: time inside logits_fn;
    guidance_seconds: combining the CFG logits (0 without CFG); sampling_seconds: the rest
    of the steps' time (sampling and bookkeeping); forwards: model passes (two per step with
    CFG); stopped_early: the answer was decided before the schedule ended (early_stop)."""

    tokens: np.ndarray
    steps_run: int
    cancelled: bool
    decode_seconds: float
    sampling_seconds: float
    guidance_seconds: float = 0.0
    forwards: int = 0
    stopped_early: bool = False


class _Logits:
    """Calls ``logits_fn`` (plain or row: sampling/rows.py), checks what it returns and times it."""

    def __init__(self, fn: LogitsFn, canvas: int, n_vocab: int) -> None:
        self.fn, self.shape, self.seconds = fn, (canvas, n_vocab), 0.0

    def __call__(self, tokens: np.ndarray, need: int = 0) -> tuple[int, np.ndarray]:
        """(first, float32 [canvas - first, n_vocab]): rows from ``first <= need`` on."""
        t0 = time.perf_counter()
        try:
            return fetch_rows(self.fn, tokens, need, self.shape)
        finally:
            self.seconds += time.perf_counter() - t0


def run_diffusion(prompt_tokens, *, canvas_length: int, mask_token_id: int, n_vocab: int,
                  logits_fn: LogitsFn, params: DiffusionParams, shift_logits: bool,
                  step_callback: Union[StepCallback, None] = None, threads: int = 1,
                  eog_ids: Optional[np.ndarray] = None) -> DiffusionResult:
    """Denoise a canvas of ``canvas_length`` tokens: the prompt, then masks.

    ``logits_fn(tokens)`` returns the logits of every canvas position (float32
    [canvas_length, n_vocab]); with ``shift_logits`` position ``p`` reads row ``p - 1``
    (row 0 for p = 0), as for Dream. ``step_callback(step, params.steps, tokens)`` runs at
    the start of every step; returning False cancels the run (see the module docstring).
    ``threads``: sampling threads; masked rows are split between them (numpy releases the
    GIL in its loops) and the result does not depend on the split. ``eog_ids``: the model's
    end-of-generation token ids (int [k]); with ``params.early_stop`` the loop stops once the
    answer up to the first of them is decided (without them it runs the whole schedule).
    Raises ValueError naming the bad argument or parameter.
    """
    validate_params(params)
    prompt = check_run_args(prompt_tokens, canvas_length, mask_token_id, n_vocab, shift_logits)
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    n_prompt, mask = prompt.size, np.int32(mask_token_id)
    if Schedule(params.schedule) == Schedule.BLOCK_BASED:
        plan = plan_block_schedule(canvas_length, n_prompt, params.steps, params.block_length)
        blocks, steps_per_block, block_based = plan.blocks, plan.steps_per_block, True
    else:
        blocks, steps_per_block, block_based = ((0, canvas_length),), params.steps, False

    seed = normalize_seed(params.seed)
    # llama_sampler_init_dist treats LLAMA_DEFAULT_SEED as "seed from the OS"; the loop's
    # own std::mt19937 takes it literally.
    dist_seed = (lambda: secrets.randbits(32)) if seed == LLAMA_DEFAULT_SEED else (lambda: seed)
    st = _State(params, MT19937Stream(seed), MT19937Stream(dist_seed()),
                MT19937Stream(dist_seed()), n_vocab, shift_logits)
    end = AnswerEnd(eog_ids, n_prompt, mask_token_id) if params.early_stop and eog_ids is not None else None
    logits_of = _Logits(logits_fn, canvas_length, n_vocab)
    try:
        if threads > 1 and not (st.gumbel and params.corrected):  # corrected gumbel draws per chunk, in order
            st.threads = min(int(threads), CHUNK_ROWS)  # one row per chunk at the least
            st.pool = ThreadPoolExecutor(max_workers=st.threads, thread_name_prefix="hoshikage-sampling")
        return _denoise(st, prompt, canvas_length, mask, blocks, steps_per_block, block_based,
                        logits_of, step_callback, end)
    finally:
        if st.pool is not None:
            st.pool.shutdown(wait=True)


def _denoise(st, prompt, canvas_length, mask, blocks, steps_per_block, block_based, logits_of,
             step_callback, answer_end: Optional[AnswerEnd]) -> DiffusionResult:
    """The step loop of :func:`run_diffusion` over ``blocks`` [(start, end)]; it stops early
    once ``answer_end`` says the answer is decided."""
    params, n_prompt = st.p, prompt.size

    canvas = np.full(canvas_length, mask, dtype=np.int32)
    canvas[:n_prompt] = prompt
    steps_run, stopped, t_steps = 0, None, 0.0  # stopped: "cancelled" or "early"
    for b, (start, end) in enumerate(blocks):
        table = None
        if block_based:
            table = get_num_transfer_tokens(int(np.count_nonzero(canvas[start:end] == mask)),
                                            steps_per_block)
        for step in range(steps_per_block):
            if step_callback is not None:
                ret = step_callback(b * steps_per_block + step, params.steps, canvas.copy())
                if ret is not None and not ret:
                    stopped = "cancelled"
                    break
            masked = np.flatnonzero(canvas[start:end] == mask) + start
            if masked.size == 0:
                break
            t0 = time.perf_counter()
            if table is not None:
                count = table[step]
            else:
                count = timestep_transfer_count(step, steps_per_block, masked.size, params.eps)
            st.step(canvas, masked, count, prompt_len=n_prompt, mask=mask, logits_of=logits_of)
            steps_run += 1
            if answer_end is not None and answer_end.decided(canvas):
                stopped = "early"
            t_steps += time.perf_counter() - t0
            if stopped:
                break
        if stopped:
            break
    passes = 2 if np.float32(params.cfg_scale) > 0 else 1  # CFG: the prompt-masked pass too
    return DiffusionResult(canvas, steps_run, stopped == "cancelled", logits_of.seconds,
                           max(0.0, t_steps - logits_of.seconds - st.guidance_seconds),
                           st.guidance_seconds, forwards=passes * steps_run, stopped_early=stopped == "early")


class _Needs(Enum):
    """What choosing positions needs from the sampler besides the tokens."""

    NOTHING = "nothing"  # every position goes, or RANDOM (its draws are the confidences)
    EXACT = "exact"  # each position's confidence, float32
    BOUNDS = "bounds"  # ENTROPY with alg_temp 0: (approx, radius); exact values where they decide


@dataclass
class _Source:
    """Where a step's masked positions read their logits: ``src[rows[i]]`` for masked position
    ``i``, except where ``row0`` (reads0 bool [n], the reference's gumbel-noised row) says."""

    src: np.ndarray
    rows: np.ndarray
    row0: tuple[np.ndarray, np.ndarray | None] | None = None


class _State:
    """Random streams and per-step work of one run."""

    def __init__(self, params: DiffusionParams, rng: MT19937Stream, chain_rng: MT19937Stream,
                 alg_rng: MT19937Stream, n_vocab: int, shift: bool) -> None:
        self.p, self.rng, self.chain_rng, self.alg_rng = params, rng, chain_rng, alg_rng
        self.n_vocab, self.shift = n_vocab, shift
        self.algorithm = Algorithm(params.algorithm)
        self.gumbel = bool(params.add_gumbel_noise) and np.float32(params.temperature) > 0
        self.pool: ThreadPoolExecutor | None = None
        self.threads = 1
        self.guidance_seconds = 0.0  # combining conditional and unconditional logits (CFG)
        self.parallel = parallel_rule(params)  # threshold / factor, or None

    def step(self, canvas, masked, count, *, prompt_len, mask, logits_of) -> None:
        """Unmask ``count`` of the ``masked`` positions of ``canvas`` (and those the parallel
        rule adds), drawing from the streams in the reference's order: CFG's second pass,
        gumbel row 0, the loop's stream, the chain."""
        source = self._source(canvas, masked, prompt_len, mask, logits_of)
        n = masked.size
        if self.algorithm == Algorithm.ORIGIN:
            p_transfer = np.float32(count) / np.float32(n)
            pick = np.flatnonzero(self.rng.uniform_float(n) < p_transfer)
            rnd = self.chain_rng.uniform_double(pick.size)
            for sub, toks, _, _ in self._sample(source, pick, rnd, _Needs.NOTHING):
                canvas[masked[sub]] = toks
            return
        rand = self.rng.uniform_float(n) if self.algorithm == Algorithm.RANDOM else None
        rnd = self.chain_rng.uniform_double(n)  # the chain's draws, one per masked position
        noise_drawn = self.gumbel and self.p.corrected  # corrected gumbel noise is drawn while sampling
        if count <= 0 and not noise_drawn and self.parallel is None:
            return  # nothing is unmasked: the tokens are not needed, only the draws
        k = max(0, min(count, n))
        needs = self._needs(rand is not None, k == n, noise_drawn)
        toks, conf, cert = self._sample_all(source, rnd, needs, certain=self.parallel is not None and k < n)
        if rand is not None:
            conf = rand
        chosen = (self._choose(conf, k, n, lambda idx: self._exact(source, idx, rnd[idx])) if k > 0
                  else np.empty(0, dtype=np.int64))
        if cert is not None:
            chosen = self.parallel.widen(chosen, cert)
        canvas[masked[chosen]] = toks[chosen]

    def _source(self, canvas, masked, prompt_len, mask, logits_of) -> _Source:
        """The logits this step reads (guided when cfg_scale > 0) and the reference's gumbel row 0."""
        rows = np.maximum(masked - 1, 0) if self.shift else masked
        guided = np.float32(self.p.cfg_scale) > 0  # both passes then read whole canvases
        first, src = logits_of(canvas, 0 if guided else int(rows.min()))
        rows = rows - first
        if guided:
            src, rows = self._guided(canvas, src, rows, prompt_len, mask, logits_of)
        source = _Source(src, rows)
        if self.gumbel and not self.p.corrected:
            reads0 = masked <= (1 if self.shift else 0)
            g = reference_gumbel_row0(self.rng, src[rows[reads0][0]] if reads0.any() else None,
                                      self.n_vocab, self.p.temperature)
            source.row0 = (reads0, g)
        return source

    def _guided(self, canvas, src, rows, prompt_len, mask, logits_of):
        """CFG: ``uncond + (cfg+1) * (cond - uncond)`` on the rows this step reads only.
        Returns (combined rows, each masked position's row in them)."""
        t0, decoding = time.perf_counter(), logits_of.seconds
        uniq, inv = np.unique(rows, return_inverse=True)
        cond = src[uniq]  # a copy, taken before the second call invalidates src
        un_x = canvas.copy()
        un_x[:prompt_len] = mask
        _, unc_view = logits_of(un_x)
        scale = np.float32(self.p.cfg_scale) + np.float32(1.0)
        for lo in range(0, uniq.size, CHUNK_ROWS):  # uncond rows are read in chunks, never copied whole
            unc = unc_view[uniq[lo:lo + CHUNK_ROWS]]
            part = cond[lo:lo + CHUNK_ROWS]
            part -= unc
            part *= scale
            part += unc
        self.guidance_seconds += time.perf_counter() - t0 - (logits_of.seconds - decoding)
        return cond, inv.reshape(-1)

    def _needs(self, random: bool, all_go: bool, noise_drawn: bool) -> _Needs:
        """No confidences when every position goes (alg_temp 0) or RANDOM draws them; with
        alg_temp 0 only the ranking matters, so ENTROPY gets cheap bounds."""
        greedy = np.float32(self.p.alg_temp) == 0
        if random or (greedy and all_go):
            return _Needs.NOTHING
        if greedy and self.algorithm == Algorithm.ENTROPY_BASED and not noise_drawn:
            return _Needs.BOUNDS
        return _Needs.EXACT

    def _sample_all(self, source: _Source, rnd, needs: _Needs, certain: bool = False):
        """Tokens int32 [n] of every masked position; what ``needs`` asks for: float32 [n]
        confidences (EXACT), an (approx, radius) pair of float64 [n] (BOUNDS), or None; and
        with ``certain`` their certainties, float64 [n] (sampling/parallel.py), else None."""
        n = rnd.size
        toks = np.empty(n, dtype=np.int32)
        conf = np.empty(n, dtype=np.float32) if needs is _Needs.EXACT else None
        bounds = (np.empty(n), np.empty(n)) if needs is _Needs.BOUNDS else None
        cert = np.empty(n) if certain else None
        for sub, t, c, sure in self._sample(source, np.arange(n), rnd, needs, certain):
            toks[sub] = t
            if conf is not None:
                conf[sub] = c
            elif bounds is not None:
                bounds[0][sub], bounds[1][sub] = c
            if cert is not None:
                cert[sub] = sure
        return toks, bounds if bounds is not None else conf, cert

    def _exact(self, source: _Source, idx: np.ndarray, rnd) -> np.ndarray:
        """Exact confidences of masked positions ``idx`` (sorted), re-sampled with their draws."""
        out = np.empty(idx.size, dtype=np.float32)
        for sub, _, c, _ in self._sample(source, idx, rnd, _Needs.EXACT):
            out[np.searchsorted(idx, sub)] = c
        return out

    def _choose(self, conf, k: int, n: int, exact) -> np.ndarray:
        """Indices into the masked list of the ``k`` positions to unmask. ``conf`` is what
        _sample_all gave (or RANDOM's draws); ``exact(idx)`` settles bounds where they overlap."""
        p = self.p
        greedy = np.float32(p.alg_temp) == 0
        if greedy and k == n:
            return np.arange(n)
        if isinstance(conf, tuple):
            return top_k_by_bounds(conf[0], conf[1], k, exact)
        if greedy:  # partial_sort by (confidence desc, index asc): a stable descending sort
            return np.argsort(-conf, kind="stable")[:k]
        if p.corrected:
            return without_replacement(conf, p.alg_temp, k, self.alg_rng)
        return dist_repeated(conf / np.float32(p.alg_temp), self.alg_rng.uniform_double(k))

    def _sample(self, source: _Source, which, rnd, needs: _Needs, certain: bool = False):
        """Run the chain on masked positions ``which`` (indices into the masked list, with the
        chain's draws ``rnd``) in chunks, yielded in position order.

        Yields (indices into the masked list, tokens int32, confidences, certainties):
        confidences float32 [rows] for EXACT, (approx, radius) float64 arrays for BOUNDS
        (ENTROPY), None for NOTHING; certainties float64 [rows] with ``certain``, else None.
        Chunks are independent and run on the pool when there is one; at most CHUNK_ROWS
        rows are in flight at once.
        """
        n = which.size
        # Only full-vocabulary rows (no top-k) carry enough numpy work per call for threads to
        # pay: after top-k the per-row work is many small calls, which contend for the GIL.
        heavy = self.p.top_k <= 0 and n * self.n_vocab >= _THREADED_MIN_VALUES
        pool = self.pool if heavy else None
        if pool is None:
            size = CHUNK_ROWS
        else:
            workers = self.threads
            size = max(1, min(CHUNK_ROWS // workers, math.ceil(n / workers)))
        spans = range(0, n, size)

        def run(lo: int):
            return self._sample_chunk(source, which[lo:lo + size], rnd[lo:lo + size], needs, certain)

        yield from (map(run, spans) if pool is None or len(spans) == 1 else pool.map(run, spans))

    def _sample_chunk(self, source: _Source, sub, rnd, needs: _Needs, certain: bool):
        p = self.p
        # Rows are read in place (src may be llama.cpp's buffer: never written); only
        # perturbed rows are private copies.
        block = [source.src[i] for i in source.rows[sub]]
        row0 = source.row0
        if row0 is not None and row0[1] is not None:
            for j in np.flatnonzero(row0[0][sub]):
                block[j] = row0[1]
        if self.gumbel and p.corrected:  # never on the pool: self.rng is drawn chunk by chunk
            noised = np.array(block, dtype=np.float32)
            corrected_gumbel_rows(self.rng, noised, p.temperature)
            block = list(noised)
        cand, d = apply_chain(block, top_k_=p.top_k, top_p_=p.top_p, temp=p.temperature, rnd=rnd)
        conf = None
        if needs is _Needs.EXACT:
            conf = confidence(self.algorithm, cand, d, p.corrected)
        elif needs is _Needs.BOUNDS:
            conf = entropy_bounds(cand, d, p.corrected)
        return sub, d.token, conf, certainty(self.algorithm, cand, d, conf) if certain else None

