"""nanochat: ternary (1.58-bit) language models on the CPU, from Python.

The interface follows llama-cpp-python's where it fits::

    import nanochat
    model = nanochat.Model()                      # the shipped default model
    out = model("fn fibonacci(n: u64) -> u64 {", max_tokens=32, seed=1)
    print(out["choices"][0]["text"])
    for chunk in model.create_chat_completion(
            [{"role": "user", "content": "Write a Rust function that adds two numbers"}],
            stream=True):
        print(chunk["choices"][0]["delta"].get("content", ""), end="")

Everything runs in nanochat's C++ engine (the same library as the `nanochat` command): the GIL
is released while it computes, Ctrl-C stops a generation (KeyboardInterrupt), and a streaming
iterator that is dropped cancels its generation.
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from . import _nanochat
from ._nanochat import DownloadError, FormatError

__version__: str = _nanochat.__version__
__all__ = ["Model", "FormatError", "DownloadError", "default_model_path", "download", "models",
           "train", "export", "__version__"]

_DEFAULT_MODEL = "nanochat-rust.gguf"


def _share_dirs() -> List[Path]:
    """share/nanochat folders this package belongs to: its own (a pip install), the build
    tree's (<build>/python/nanochat -> <build>/share), an install prefix's."""
    here = Path(__file__).resolve().parent
    bases = (here, here.parent.parent, here.parent.parent.parent, here.parent.parent.parent.parent)
    return [b / "share" / "nanochat" for b in bases if (b / "share" / "nanochat").is_dir()]


# The library looks there for the registry (models/registry.toml) and the default model.
for _dir in reversed(_share_dirs()):
    _nanochat.add_data_dir(str(_dir))


def default_model_path() -> Optional[str]:
    """The shipped default model, if found: NANOCHAT_ARG_MODEL, else share/nanochat/models/ of
    the build tree or install prefix this package belongs to."""
    env = os.environ.get("NANOCHAT_ARG_MODEL")
    if env:
        return env
    for share in _share_dirs():
        candidate = share / "models" / _DEFAULT_MODEL
        if candidate.is_file():
            return str(candidate)
    return None


def _int_arg(name: str, value: Any, low: int, high: Optional[int] = None,
             none: Optional[int] = None) -> int:
    """`value` as an int in [low, high]; None gives `none` where None is allowed. A wrong type is
    a TypeError and a value out of range a ValueError, each naming the parameter."""
    if value is None and none is not None:
        return none
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int{' or None' if none is not None else ''}, "
                        f"not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} {value}: must be {bound}")
    return value


def _float_arg(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def download(model: str, revision: str = "main", sha256: Optional[str] = None,
             output: Optional[Union[str, os.PathLike]] = None, force: bool = False,
             retries: int = 5, on_progress: Optional[Any] = None) -> str:
    """Downloads a model into nanochat's cache (as `nanochat download` does) and returns its path.

    Args:
        model: a registry name (see models()), an http(s):// URL or hf://OWNER/REPO/FILE.gguf.
        revision: branch, tag or commit of an hf:// address.
        sha256: expected SHA-256; a file that does not match is deleted.
        output: write the file here instead of the cache.
        force: download again even when cached.
        retries: transient failures tolerated in a row.
        on_progress: called as on_progress(bytes_done, bytes_total) (total 0 while unknown).

    A cached model returns at once. An interrupted download (KeyboardInterrupt) keeps what
    arrived; the next call resumes it. Raises DownloadError (an OSError) when the transfer or
    a check fails, ValueError for an unknown name or a bad argument.
    """
    return _nanochat.download(model, revision, sha256 or "", os.fspath(output) if output else "",
                              force, retries, on_progress)


def models() -> List[Dict[str, Any]]:
    """The registry's entries, downloads under other names and unfinished downloads, as
    `nanochat models --json` lists them: name, status ("local", "downloaded", "not downloaded",
    "partial", ...), sha256, size, path (None until downloaded), urls, and for registry entries
    description, license, architecture, use, note, pull and the registry file."""
    return _nanochat.list_models()


class Model:
    """A loaded model: a GGUF file nanochat runs, with its tokenizer and chat template.

    Args:
        path: GGUF file, registry name (see nanochat.models()), http(s):// URL or
            hf://OWNER/REPO/FILE.gguf; None for the shipped default model. A name or address
            comes from the cache; with pull=True one not downloaded yet is downloaded first.
        n_ctx: context per generation slot in tokens (0: the model's).
        n_threads: compute threads (0: the physical cores).
        n_slots: generations decoded together (generate_batch, concurrent streams).
        seed: default seed for generations that give none (None: a random one each time).
        pull: download a name or address that is not in the cache yet.
    """

    def __init__(self, path: Optional[str] = None, n_ctx: int = 0, n_threads: int = 0,
                 n_slots: int = 4, seed: Optional[int] = None, pull: bool = False) -> None:
        if path is None:
            path = default_model_path()
            if path is None:
                raise FileNotFoundError(
                    f"the default model {_DEFAULT_MODEL} was not found beside this package; "
                    "pass a path or set NANOCHAT_ARG_MODEL")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a string or a path, not {type(path).__name__}")
        if isinstance(path, str) and _nanochat.spec_kind(path) != "path":
            path = _nanochat.resolve_model(path, pull, None)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        n_ctx = _int_arg("n_ctx", n_ctx, 0)
        n_threads = _int_arg("n_threads", n_threads, 0, _nanochat.max_thread_count())
        n_slots = _int_arg("n_slots", n_slots, 1)
        if seed is not None:
            seed = _int_arg("seed", seed, 0, 2 ** 64 - 1)
        self._m = _nanochat.Model(os.fspath(path), n_ctx, n_threads, n_slots)
        self._seed = seed
        self.model_path = os.fspath(path)

    # --- tokens -----------------------------------------------------------------------------

    def tokenize(self, text: Union[str, bytes], add_bos: bool = True,
                 special: bool = False) -> List[int]:
        """Token ids of `text` (BOS first when the model asks for it and add_bos)."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="surrogateescape")
        return self._m.tokenize(text, add_bos, special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> bytes:
        """The bytes of token ids (control tokens only with special=True)."""
        return self._m.detokenize(list(ids), special)

    @property
    def n_ctx(self) -> int:
        return self._m.n_ctx

    @property
    def n_vocab(self) -> int:
        return self._m.n_vocab

    @property
    def metadata(self) -> Dict[str, Any]:
        """The GGUF file's metadata keys (arrays in a readable summary)."""
        return self._m.metadata()

    def info(self) -> Dict[str, Any]:
        """Path, architecture, sizes, context, chat template, kernel path and threads."""
        return self._m.info()

    # --- scoring ----------------------------------------------------------------------------

    def eval_logits(self, ids: Sequence[int]):
        """Logits of every position for `ids` from an empty context: a NumPy float32 array of
        shape (len(ids), n_vocab), not copied."""
        return self._m.eval_logits(list(ids))

    def perplexity(self, text: str, n_ctx: int = 0) -> Dict[str, float]:
        """Perplexity and bits per byte of `text`, every token scored (as `nanochat eval bpb`
        scores one file)."""
        return self._m.score(text, n_ctx)

    # --- generation -------------------------------------------------------------------------

    def _args(self, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty,
              presence_penalty, frequency_penalty, stop, seed, logprobs, ignore_eos):
        a = _nanochat.SamplingArgs()
        a.max_tokens = _int_arg("max_tokens", max_tokens, 0, none=-1)
        a.temperature = _float_arg("temperature", temperature)
        a.top_p = _float_arg("top_p", top_p)
        a.top_k = _int_arg("top_k", top_k, 0)
        a.min_p = _float_arg("min_p", min_p)
        a.repeat_penalty = _float_arg("repeat_penalty", repeat_penalty)
        a.presence_penalty = _float_arg("presence_penalty", presence_penalty)
        a.frequency_penalty = _float_arg("frequency_penalty", frequency_penalty)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        for i, s in enumerate(stops):
            if not isinstance(s, str):
                raise TypeError(f"stop[{i}] must be a string, not {type(s).__name__}")
        a.stop = stops
        if seed is None:
            seed = self._seed if self._seed is not None else random.getrandbits(63)
        a.seed = _int_arg("seed", seed, 0, 2 ** 64 - 1)
        a.logprobs = _int_arg("logprobs", logprobs, 0, 20, none=-1)
        a.ignore_eos = bool(ignore_eos)
        return a

    def _run(self, prompt_ids: List[int], args) -> Iterator[tuple]:
        stream = self._m.generate(prompt_ids, args)
        try:
            while True:
                text, done, result = stream.next()
                yield text, done, result
                if done:
                    return
        finally:
            stream.cancel()  # a dropped iterator, an exception, Ctrl-C: the generation stops

    def _prompt_ids(self, prompt: Union[str, Sequence[int]]) -> List[int]:
        if isinstance(prompt, str):
            return self.tokenize(prompt, add_bos=True, special=True)
        return list(prompt)

    def create_completion(self, prompt: Union[str, Sequence[int]], max_tokens: Optional[int] = 16,
                          temperature: float = 0.8, top_p: float = 0.95, top_k: int = 40,
                          min_p: float = 0.05, repeat_penalty: float = 1.0,
                          presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                          stop: Union[str, List[str], None] = None, seed: Optional[int] = None,
                          stream: bool = False, logprobs: Optional[int] = None,
                          echo: bool = False, ignore_eos: bool = False):
        """A completion of `prompt` (text or token ids) as OpenAI's text_completion dict, or with
        stream=True an iterator of chunks. max_tokens=None: until the answer ends or the context
        is full."""
        args = self._args(max_tokens, temperature, top_p, top_k, min_p, repeat_penalty,
                          presence_penalty, frequency_penalty, stop, seed, logprobs, ignore_eos)
        ids = self._prompt_ids(prompt)
        prompt_text = prompt if isinstance(prompt, str) else _text(self.detokenize(ids))
        meta = {"id": f"cmpl-{random.getrandbits(64):016x}", "object": "text_completion",
                "created": int(time.time()), "model": self.model_path}
        if stream:
            return self._stream_completion(ids, args, meta, prompt_text if echo else "")
        pieces: List[bytes] = []
        result = None
        for text, done, r in self._run(ids, args):
            pieces.append(text)
            if done:
                result = r
        text = _text(b"".join(pieces))
        return dict(meta, choices=[{
            "text": (prompt_text if echo else "") + text, "index": 0,
            "logprobs": _completion_logprobs(result) if logprobs is not None else None,
            "finish_reason": _finish(result["finish_reason"])}],
            usage=_usage(result))

    def _stream_completion(self, ids, args, meta, echo_text) -> Iterator[Dict[str, Any]]:
        pending = b""
        if echo_text:
            yield dict(meta, choices=[{"text": echo_text, "index": 0, "logprobs": None,
                                       "finish_reason": None}])
        for text, done, result in self._run(ids, args):
            pending += text
            if pending:
                yield dict(meta, choices=[{"text": _text(pending), "index": 0, "logprobs": None,
                                           "finish_reason": None}])
                pending = b""
            if done:
                yield dict(meta, choices=[{"text": "", "index": 0, "logprobs": None,
                                           "finish_reason": _finish(result["finish_reason"])}],
                           usage=_usage(result))

    __call__ = create_completion

    def create_chat_completion(self, messages: List[Dict[str, Any]],
                               max_tokens: Optional[int] = None, temperature: float = 0.8,
                               top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
                               repeat_penalty: float = 1.0, presence_penalty: float = 0.0,
                               frequency_penalty: float = 0.0,
                               stop: Union[str, List[str], None] = None,
                               seed: Optional[int] = None, stream: bool = False):
        """An answer to `messages` ({"role", "content"}, rendered with the model's chat
        template) as OpenAI's chat.completion dict, or with stream=True an iterator of
        chat.completion.chunk dicts."""
        if not isinstance(messages, (list, tuple)) or not messages:
            raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
        pairs = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m:
                raise ValueError(f"messages[{i}] must be a dict with a 'role'")
            content = m.get("content") or ""
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
            if not isinstance(content, str):
                raise TypeError(f"messages[{i}]['content'] must be a string or a list of text "
                                f"parts, not {type(content).__name__}")
            role = "system" if m["role"] == "developer" else m["role"]
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"messages[{i}]: role '{m['role']}' is not system, user or "
                                 "assistant")
            pairs.append((role, content))
        prompt = self._m.apply_chat_template(pairs, True)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        args = self._args(max_tokens, temperature, top_p, top_k, min_p, repeat_penalty,
                          presence_penalty, frequency_penalty, stops + self._m.chat_stop(), seed,
                          None, False)
        ids = self.tokenize(prompt, add_bos=True, special=True)
        meta = {"id": f"chatcmpl-{random.getrandbits(64):016x}", "created": int(time.time()),
                "model": self.model_path}
        if stream:
            return self._stream_chat(ids, args, meta)
        pieces, result = [], None
        for text, done, r in self._run(ids, args):
            pieces.append(text)
            if done:
                result = r
        return dict(meta, object="chat.completion", choices=[{
            "index": 0, "message": {"role": "assistant", "content": _text(b"".join(pieces))},
            "logprobs": None, "finish_reason": _finish(result["finish_reason"])}],
            usage=_usage(result))

    def _stream_chat(self, ids, args, meta) -> Iterator[Dict[str, Any]]:
        yield dict(meta, object="chat.completion.chunk", choices=[{
            "index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for text, done, result in self._run(ids, args):
            if text:
                yield dict(meta, object="chat.completion.chunk", choices=[{
                    "index": 0, "delta": {"content": _text(text)}, "finish_reason": None}])
            if done:
                yield dict(meta, object="chat.completion.chunk", choices=[{
                    "index": 0, "delta": {}, "finish_reason": _finish(result["finish_reason"])}],
                    usage=_usage(result))

    def generate_batch(self, prompts: Sequence[Union[str, Sequence[int]]],
                       max_tokens: Optional[int] = 16, temperature: float = 0.8,
                       top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
                       stop: Union[str, List[str], None] = None,
                       seed: Optional[int] = None, ignore_eos: bool = False) -> List[str]:
        """Completions of several prompts decoded together (the server's batch scheduler): each
        equal to what create_completion gives alone with the same seed (prompt i uses seed + i
        when a seed is given)."""
        base = seed if seed is not None else (self._seed if self._seed is not None
                                              else random.getrandbits(62))
        streams = []
        try:
            for i, p in enumerate(prompts):
                args = self._args(max_tokens, temperature, top_p, top_k, min_p, 1.0, 0.0, 0.0,
                                  stop, base + i, None, ignore_eos)
                streams.append(self._m.submit(self._prompt_ids(p), args))
            out = []
            for s in streams:
                pieces = []
                while True:
                    text, done, _ = s.next()
                    pieces.append(text)
                    if done:
                        break
                out.append(_text(b"".join(pieces)))
            return out
        finally:
            for s in streams:
                s.cancel()


def _finish(reason: str) -> str:
    return "length" if reason in ("length", "context") else "stop"


def _usage(result: Dict[str, Any]) -> Dict[str, int]:
    return {"prompt_tokens": result["prompt_tokens"],
            "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}


def _completion_logprobs(result: Dict[str, Any]) -> Dict[str, Any]:
    tokens, lps, tops, offsets, offset = [], [], [], [], 0
    for piece, lp, top in result["logprobs"]:
        tokens.append(_text(piece))
        lps.append(lp)
        tops.append({_text(p): v for p, v in top})
        offsets.append(offset)
        offset += len(piece)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"override value {v!r}: use a bool, number, string or list")


def train(config: Union[str, os.PathLike], overrides: Optional[Dict[str, Any]] = None,
          resume: bool = False, init: Optional[str] = None, stop_after: int = 0,
          n_threads: int = 0, on_step=None) -> Dict[str, Any]:
    """Runs `nanochat train` from Python: the same trainer, config and outputs (checkpoints,
    train.jsonl, the exported model). `overrides` maps "section.key" to values, as --set does.
    `on_step(report)` is called after each optimizer step with a dict (step, total_steps, loss,
    lr, grad_norm, tokens_per_second, elapsed_seconds, eta_seconds); returning False stops the
    run after that step with a checkpoint (as Ctrl-C does, which then raises KeyboardInterrupt).
    Returns the run's result (steps, finished, losses, checkpoint, model)."""
    sets = [f"{k}={_toml_value(v)}" for k, v in (overrides or {}).items()]
    return _nanochat.train(os.fspath(config), sets, resume, os.fspath(init) if init else "",
                           stop_after, n_threads, on_step)


def export(checkpoint: Union[str, os.PathLike], output: Union[str, os.PathLike],
           arch: str = "nanochat", ternary: str = "tq2_0") -> int:
    """Writes a training checkpoint (a file, or the newest in a run's folder) as a GGUF model, as
    `nanochat export` does; returns the checkpoint's step."""
    return _nanochat.export(os.fspath(checkpoint), os.fspath(output), arch, ternary)
