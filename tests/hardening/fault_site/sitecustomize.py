"""Fault injection for tests/hardening/test_faults.py, loaded only by servers started with
this folder on PYTHONPATH and HOSHIKAGE_FAULTS=1.

A prompt containing RAISE-BEFORE makes generate() raise in the worker before generation starts;
RAISE-MIDSTREAM makes the token stream raise after its first chunk.
"""
import os

if os.environ.get("HOSHIKAGE_FAULTS") == "1":
    import hoshikage.server.execute as _execute

    _real_generate = _execute.generate

    def _text(model, kw) -> str:
        if kw.get("prompt_tokens") is not None:  # the server passes the prompt it rendered once
            return model.detokenize(kw["prompt_tokens"])
        return str(kw.get("prompt") or "") + " ".join(m.get("content") or "" for m in kw.get("messages") or [])

    def generate(model, *args, **kw):
        text = _text(model, kw)
        if "RAISE-BEFORE" in text:
            raise RuntimeError("injected fault before generation")
        chunks = _real_generate(model, *args, **kw)
        if "RAISE-MIDSTREAM" not in text:
            return chunks

        def broken():
            for i, chunk in enumerate(chunks):
                yield chunk
                if i == 0:
                    raise MemoryError("injected fault in the middle of generation")

        return broken()

    _execute.generate = generate
