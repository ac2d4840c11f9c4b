"""Pure-numpy masked-diffusion sampler, bit-exact with llama.cpp's ``diffusion_generate``.

``run_diffusion`` is the loop; ``DiffusionParams`` its knobs, declared once with the shared sampling
parameters in ``SHARED_PARAMS`` / ``DIFFUSION_PARAMS`` (``corrected=True`` switches
from reproducing llama.cpp, defects included, to the published LLaDA / Dream algorithms).
Only numpy is imported here; the model is reached through a ``logits_fn`` callable.
"""
from .diffusion import CHUNK_ROWS, DiffusionResult, LogitsFn, StepCallback, run_diffusion
from .declared import Param
from .params import DIFFUSION_PARAMS, SHARED_PARAMS, Algorithm, DiffusionParams, Schedule
from .random import LLAMA_DEFAULT_SEED, MT19937Stream
from .schedules import (BlockPlan, get_num_transfer_tokens, plan_block_schedule,
                        timestep_transfer_count, validate_params)

__all__ = [
    "Algorithm", "BlockPlan", "CHUNK_ROWS", "DIFFUSION_PARAMS", "DiffusionParams", "DiffusionResult", "Param",
    "SHARED_PARAMS",
    "LLAMA_DEFAULT_SEED", "LogitsFn", "MT19937Stream", "Schedule", "StepCallback",
    "get_num_transfer_tokens", "plan_block_schedule", "run_diffusion",
    "timestep_transfer_count", "validate_params",
]
