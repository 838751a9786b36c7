"""llama-cpp-python's OpenAI-compatible server, with llama.cpp's extra weight buffers off.

The extra buffers hold weights repacked for a CPU's special kernels. On a CPU with AMX (the Intel
Xeon this project ran on, 2026-12-03), the server's first completion with SmolLM2's q4_1 weights
died with a general protection fault in libggml-cpu. catrl's own engine loads with repacking off
(catrl.engines.llamacpp, for determinism), so only this server needed it. llama-cpp-python's
server has no flag for it, so this launcher sets the default model parameters before the server
reads them, then runs the server with the same arguments as `python -m llama_cpp.server`.
"""

import llama_cpp.llama_cpp as low

_defaults = low.llama_model_default_params


def _no_extra_buffers():
    params = _defaults()
    params.use_extra_bufts = False
    return params


low.llama_model_default_params = _no_extra_buffers

if __name__ == "__main__":
    from llama_cpp.server.__main__ import main

    main()
