"""``hoshikage generate``: one generation from the command line, with llama.cpp's flag names.

Autoregressive models follow ``llama-simple`` / ``llama-completion``; diffusion models follow
``llama-diffusion-cli``: the canvas is ``-ub`` tokens (prompt included), the schedule is
chosen by giving exactly one of ``--diffusion-eps`` / ``--diffusion-block-length``, and the
printed result is the whole canvas after the prompt.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..sampling.params import DIFFUSION, DIFFUSION_PARAMS, SHARED_PARAMS
from .param_flags import add_flags

LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp's "pick a random seed"
# llama-diffusion-cli's defaults; 0 = not given for eps and block length (exactly one picks the schedule).
# Parallel decoding and early stop are off, so the printed canvas is llama-diffusion-cli's.
DIFFUSION_CLI_DEFAULTS = {"steps": 128, "algorithm": "4", "eps": 0.0, "block_length": 0, "alg_temp": 0.0,
                          "cfg_scale": 0.0, "threshold": 0.0, "factor": 0.0, "early_stop": False,
                          "cache": None, "cache_refresh": 0}  # no prefix cache: llama-diffusion-cli's passes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text with a GGUF model (autoregressive or diffusion)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", required=True, help="path of the .gguf file")
    p.add_argument("-p", "--prompt", required=True, help="the prompt")
    p.add_argument("-sys", "--system-prompt", default="", help="system message (with the chat template)")
    p.add_argument("-n", "--n-predict", type=int, default=-1,
                   help="tokens to generate; -1 = until the context is full (autoregressive only; "
                        "a diffusion canvas is -ub tokens)")
    p.add_argument("-c", "--ctx-size", type=int, default=0, help="context size (0 = the model's)")
    p.add_argument("-ub", "--ubatch-size", type=int, default=512,
                   help="physical batch size; for diffusion the canvas length, prompt included (default 512)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all available)")
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=None,
                   help="layers to offload to the GPU / the RPC servers (default: 0; with --rpc, all)")
    p.add_argument("--rpc", default=None, metavar="HOST:PORT,...",
                   help="RPC servers (llama.cpp's rpc-server) to split the model across (docs/rpc.md)")
    p.add_argument("-ts", "--tensor-split", default=None, metavar="N0,N1,...",
                   help="proportions of the offloaded layers per device: the RPC servers', then the GPUs'")
    add_flags(p, SHARED_PARAMS, {**{q.name: q.default for q in SHARED_PARAMS}, "seed": LLAMA_DEFAULT_SEED})
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    tmpl = p.add_mutually_exclusive_group()
    tmpl.add_argument("--chat-template", dest="chat_template", action="store_true", default=True,
                      help="wrap -p in the model's chat template (default, as llama-diffusion-cli)")
    tmpl.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                      help="use -p as raw text (as llama-simple)")
    d = p.add_argument_group("diffusion (llama-diffusion-cli's flags)", "give exactly one of --diffusion-eps "
                             "(timestep schedule: Dream, RND1) and --diffusion-block-length (block schedule: LLaDA)")
    add_flags(d, [q for q in DIFFUSION_PARAMS if q.name in DIFFUSION_CLI_DEFAULTS], DIFFUSION_CLI_DEFAULTS)
    d.add_argument("--diffusion-add-gumbel-noise", type=float, default=0.0,
                   help="non-zero adds gumbel noise when temp > 0 (a number, as llama.cpp parses it)")
    d.add_argument("--diffusion-visual", action="store_true",
                   help="show the answer so far (unmasked tokens) on the progress line as it is denoised")
    d.add_argument("--diffusion-corrected", action="store_true",
                   help="use the published LLaDA/Dream algorithms instead of llama.cpp's (docs/diffusion.md)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text")
    p.set_defaults(handler=run)


def _diffusion_options(args: argparse.Namespace) -> dict[str, Any]:
    from ..sampling.params import Algorithm, Schedule

    if (args.diffusion_eps == 0) == (args.diffusion_block_length == 0):
        raise ValueError("give exactly one of --diffusion-eps (timestep schedule) or --diffusion-block-length "
                         f"(block schedule); got eps={args.diffusion_eps}, block_length={args.diffusion_block_length}")
    algorithm = Algorithm(DIFFUSION["algorithm"].member(args.diffusion_algorithm, "--diffusion-algorithm"))
    block = args.diffusion_block_length != 0
    return {
        "steps": args.diffusion_steps, "algorithm": algorithm,
        "schedule": Schedule.BLOCK_BASED if block else Schedule.TIMESTEP_BASED,
        "eps": args.diffusion_eps if not block else 0.0,
        "block_length": args.diffusion_block_length if block else 0,
        "alg_temp": args.diffusion_alg_temp, "cfg_scale": args.diffusion_cfg_scale,
        "add_gumbel_noise": args.diffusion_add_gumbel_noise != 0, "corrected": args.diffusion_corrected,
        "threshold": args.diffusion_threshold, "factor": args.diffusion_factor,
        "early_stop": args.diffusion_early_stop,
        "cache": args.diffusion_cache, "cache_refresh": args.diffusion_cache_refresh,
    }


def _progress(visual: bool, model: Any, n_prompt: int):
    """The library's tqdm bar on stderr; ``--diffusion-visual`` adds the answer so far to its line."""
    from ..progress import progress_bar

    return progress_bar("diffusion step", file=sys.stderr, model=model, n_prompt=n_prompt, show_text=visual)


def run(args: argparse.Namespace) -> int:
    from .. import Model, generate, prepare_prompt

    try:
        model = Model(args.model, n_gpu_layers=args.n_gpu_layers, rpc=args.rpc, tensor_split=args.tensor_split)
    except Exception as exc:  # ModelLoadError, LibraryNotFound: the message says what to do
        print(f"hoshikage generate: {exc}", file=sys.stderr)
        return 1
    with model:
        messages = None
        if args.chat_template and model.chat_template:
            messages = ([{"role": "system", "content": args.system_prompt}] if args.system_prompt else []) + \
                       [{"role": "user", "content": args.prompt}]
        seed = None if args.seed == LLAMA_DEFAULT_SEED else args.seed
        common = dict(prompt=None if messages else args.prompt, messages=messages, stop=args.stop,
                      temperature=args.temp, top_k=args.top_k, top_p=args.top_p, seed=seed,
                      n_threads=args.threads)
        try:
            if model.is_diffusion:
                n_prompt = len(prepare_prompt(model, common["prompt"], messages))
                if n_prompt >= args.ubatch_size:
                    raise ValueError(f"the prompt has {n_prompt} tokens; the canvas (-ub {args.ubatch_size}) "
                                     "must be longer")
                for flag, value in (("--diffusion-cfg-scale", args.diffusion_cfg_scale),
                                    ("--diffusion-alg-temp", args.diffusion_alg_temp)):
                    if value and not args.json:
                        print(f"note: {flag} is honoured here; llama-diffusion-cli parses it but never uses it",
                              file=sys.stderr)
                on_step = None if args.json else _progress(args.diffusion_visual, model, n_prompt)
                result = generate(model, **common, max_tokens=args.ubatch_size - n_prompt,
                                  diffusion=_diffusion_options(args), adjust=False,
                                  n_ctx=max(args.ctx_size, args.ubatch_size), on_step=on_step)
            else:
                n_ctx = args.ctx_size or model.n_ctx_train
                max_tokens = args.n_predict if args.n_predict > 0 else n_ctx
                result = generate(model, **common, max_tokens=max_tokens, n_ctx=n_ctx, min_p=args.min_p,
                                  repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
                                  presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty)
        except ValueError as exc:
            print(f"hoshikage generate: {exc}", file=sys.stderr)
            return 2
    if args.json:
        out = result.to_dict()
        if result.kind == "diffusion":
            out["forwards"] = result.timings.forwards  # model passes (CFG: two per step)
        out["params"] = {k: (v.name if hasattr(v, "name") else v) for k, v in out["params"].items()}
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(result.canvas_text if result.canvas_text is not None else result.text)
    return 0
