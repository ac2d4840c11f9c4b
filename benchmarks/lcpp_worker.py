"""llama-cpp-python's side of the autoregressive comparison; runs in the bench venv's python.

Imports only the standard library and llama_cpp (not hoshikage, not this package). Times one
streamed greedy completion exactly as ``benchmarks/worker.py`` times Hoshikage's: after a
warm-up, from the call to the first text (time to first token), then to the last chunk.

usage: <bench-venv>/bin/python lcpp_worker.py JOB     (JOB: JSON with model_path, prompt,
       max_tokens, n_ctx, threads); prints one JSON line.
"""
import json
import sys
import time

from llama_cpp import Llama


def main() -> int:
    job = json.loads(sys.argv[1])
    # flash_attn: llama-cpp-python disables it by default; llama.cpp's default (AUTO) enables it
    # on CPU, and Hoshikage keeps llama.cpp's default. Same kernels, same tokens.
    llm = Llama(model_path=job["model_path"], n_ctx=job["n_ctx"], n_threads=job["threads"],
                n_threads_batch=job["threads"], flash_attn=True, verbose=False)
    prompt = job["prompt"]
    llm.create_completion(prompt, max_tokens=8, temperature=0)  # warm-up
    llm.reset()  # no prefix reuse: Hoshikage's side clears its context too
    n_prompt = len(llm.tokenize(prompt.encode()))
    t0 = time.perf_counter()
    first, n, text, finish = None, 0, [], None
    for chunk in llm.create_completion(prompt, max_tokens=job["max_tokens"], temperature=0, stream=True):
        choice = chunk["choices"][0]
        if choice["text"]:
            if first is None:
                first = time.perf_counter()
            n += 1
            text.append(choice["text"])
        finish = choice.get("finish_reason") or finish
    t_end = time.perf_counter()
    print(json.dumps({"n_prompt": n_prompt, "n_gen": n, "ttft_ms": 1000 * (first - t0),
                      "prompt_tps": n_prompt / (first - t0),
                      "gen_tps": (n - 1) / (t_end - first) if n > 1 else None,
                      "finish_reason": finish, "text": "".join(text)}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
