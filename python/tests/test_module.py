"""The nanochat Python module on the shipped default model: every method, streaming and
cancellation, errors, agreement with the nanochat command, batches, memory."""
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import nanochat

PROMPT = "fn fibonacci(n: u64) -> u64 {"


@pytest.fixture(scope="module")
def model():
    return nanochat.Model(n_threads=2)


def test_version_and_default_model(model):
    assert nanochat.__version__
    assert model.model_path.endswith("nanochat-rust.gguf")
    info = model.info()
    assert info["architecture"] == "nanochat"
    assert info["n_vocab"] == model.n_vocab == 8192
    assert info["n_ctx"] == model.n_ctx == 512
    assert model.metadata["general.architecture"] == "nanochat"


def test_tokenize_round_trip(model):
    ids = model.tokenize(PROMPT)
    assert all(isinstance(i, int) for i in ids)
    assert model.detokenize(ids) == PROMPT.encode()
    assert model.tokenize(PROMPT, add_bos=False) == ids[1:] or model.tokenize(PROMPT, add_bos=False) == ids
    assert model.tokenize(PROMPT.encode()) == ids


def test_completion_shape_and_seed(model):
    a = model(PROMPT, max_tokens=12, seed=5, temperature=1.0)
    b = model.create_completion(PROMPT, max_tokens=12, seed=5, temperature=1.0)
    assert a["object"] == "text_completion"
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    usage = a["usage"]
    assert 1 <= usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert a["choices"][0]["finish_reason"] in ("stop", "length")


def test_same_text_as_the_command(model, binary):
    out = subprocess.run([binary, "generate", "-p", PROMPT, "-n", "24", "-s", "77", "--temp",
                          "0.9", "--json", "-t", "2"], capture_output=True, text=True, check=True)
    cli = json.loads(out.stdout)
    py = model(PROMPT, max_tokens=24, seed=77, temperature=0.9)
    assert py["choices"][0]["text"] == cli["text"]


def test_streaming_adds_up_and_echo(model):
    whole = model(PROMPT, max_tokens=20, seed=3)["choices"][0]["text"]
    chunks = list(model(PROMPT, max_tokens=20, seed=3, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    echo = model(PROMPT, max_tokens=4, seed=3, echo=True)["choices"][0]["text"]
    assert echo.startswith(PROMPT)


def test_stop_and_logprobs(model):
    free = model(PROMPT, max_tokens=30, temperature=0, ignore_eos=True)["choices"][0]["text"]
    cut = free.strip()[:2]
    stopped = model(PROMPT, max_tokens=30, temperature=0, stop=[cut])["choices"][0]
    assert stopped["text"] == free[:free.index(cut)]
    lp = model(PROMPT, max_tokens=5, temperature=0, logprobs=2, ignore_eos=True)["choices"][0]
    assert len(lp["logprobs"]["tokens"]) == 5
    assert all(v <= 0 for v in lp["logprobs"]["token_logprobs"])


def test_chat(model):
    messages = [{"role": "user", "content": "Write a Rust function that adds two numbers"}]
    r = model.create_chat_completion(messages, max_tokens=16, seed=1)
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"]["role"] == "assistant"
    chunks = list(model.create_chat_completion(messages, max_tokens=16, seed=1, stream=True))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == r["choices"][0]["message"]["content"]
    with pytest.raises(ValueError, match="role"):
        model.create_chat_completion([{"role": "tool", "content": "x"}])


def test_dropped_iterator_cancels(model):
    it = model(PROMPT, max_tokens=None, ignore_eos=True, stream=True, seed=1)
    next(it)
    next(it)
    it.close()  # as when the iterator is dropped: the generation is cancelled
    # The slot is free again at once: a batch of n_slots generations still runs.
    out = model.generate_batch([PROMPT] * 4, max_tokens=4, seed=1, ignore_eos=True)
    assert len(out) == 4


def test_generate_batch_equals_alone(model):
    prompts = [PROMPT, "pub struct Point {", "impl Display for", "use std::io;\n", "fn main() {"]
    batch = model.generate_batch(prompts, max_tokens=16, seed=40, temperature=1.0)
    alone = [model(p, max_tokens=16, seed=40 + i, temperature=1.0)["choices"][0]["text"]
             for i, p in enumerate(prompts)]
    assert batch == alone


def test_logits_match_scoring(model):
    text = "fn main() {\n    println!(\"hi\");\n}\n"
    ids = model.tokenize(text)
    logits = model.eval_logits(ids)
    assert logits.shape == (len(ids), model.n_vocab)
    assert logits.dtype == np.float32
    # The log-likelihood from the logits equals the engine's scoring of the same text.
    z = logits[:-1].astype(np.float64)
    lse = np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) + z.max(axis=1)
    nll = -(z[np.arange(len(ids) - 1), ids[1:]] - lse).sum()
    score = model.perplexity(text)
    assert score["tokens"] == len(ids) - 1
    assert abs(score["nll"] - nll) < 1e-3 * max(1.0, nll)
    assert score["perplexity"] == pytest.approx(np.exp(nll / (len(ids) - 1)), rel=1e-4)


def test_errors(model):
    with pytest.raises(FileNotFoundError):
        nanochat.Model("/nonexistent/model.gguf")
    with pytest.raises(ValueError, match="top_p"):
        model(PROMPT, top_p=2.0)
    with pytest.raises(ValueError):
        model.detokenize([10 ** 6])
    with pytest.raises(ValueError):
        model(PROMPT * 200, max_tokens=4)  # longer than the context
    with pytest.raises(ValueError):
        model.eval_logits([])


def test_bad_arguments_name_the_parameter(model):
    # The parameter as the caller spelled it, not the library's field; a wrong type is a TypeError
    # with that name, not pybind11's list of overloads.
    for kwargs, pattern in [({"max_tokens": -5}, "max_tokens -5"), ({"seed": -5}, "seed -5"),
                            ({"seed": 2 ** 64}, "seed 18446744073709551616"),
                            ({"logprobs": 50}, "logprobs 50"), ({"top_k": -1}, "top_k -1")]:
        with pytest.raises(ValueError, match=pattern):
            model(PROMPT, **kwargs)
    for kwargs, pattern in [({"temperature": "hot"}, "temperature must be a number"),
                            ({"max_tokens": 2.7}, "max_tokens must be an int"),
                            ({"max_tokens": "5"}, "max_tokens must be an int"),
                            ({"stop": ["a", 3]}, r"stop\[1\] must be a string")]:
        with pytest.raises(TypeError, match=pattern):
            model(PROMPT, **kwargs)
    with pytest.raises(ValueError, match="messages must be a non-empty list"):
        model.create_chat_completion([])
    with pytest.raises(TypeError, match=r"messages\[0\]\['content'\] must be a string"):
        model.create_chat_completion([{"role": "user", "content": 5}])
    with pytest.raises(ValueError, match="no token to score"):
        model.perplexity("")
    for kwargs, pattern in [({"n_ctx": -1}, "n_ctx -1"), ({"n_slots": 0}, "n_slots 0"),
                            ({"n_threads": -1}, "n_threads -1"),
                            ({"n_threads": 10 ** 6}, "n_threads 1000000: must be from 0 to")]:
        with pytest.raises(ValueError, match=pattern):
            nanochat.Model(model.model_path, **kwargs)


def test_malformed_file_is_a_format_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(nanochat.FormatError):
        nanochat.Model(str(bad))
    assert issubclass(nanochat.FormatError, ValueError)


def test_two_threads_two_models():
    results = {}

    def run(i):
        m = nanochat.Model(n_threads=1)
        results[i] = m(PROMPT, max_tokens=8, seed=i)["choices"][0]["text"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2


def test_ctrl_c_stops_a_generation():
    script = (
        "import nanochat, sys\n"
        "m = nanochat.Model(n_ctx=16384, n_threads=1)\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    m('fn main() {', max_tokens=None, ignore_eos=True)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    print(len(m.generate_batch(['fn'], max_tokens=2)), flush=True)\n")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert out.split() == ["interrupted", "1"], (out, err)
    assert p.returncode == 0


def test_memory_does_not_grow(model):
    for _ in range(50):
        model(PROMPT, max_tokens=2, seed=1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(1000):
        model(PROMPT, max_tokens=2, seed=1)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 20 * 1024, f"grew by {grown_kib} KiB over 1000 calls"


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_overrides(run_dir, total_steps=6):
    return {
        "data.inputs": [os.path.join(REPO, "src/train"), os.path.join(REPO, "src/model")],
        "data.max_bytes": 60000, "data.tokenizer_vocab_size": 300,
        "training.total_steps": total_steps, "training.warmup_steps": 1,
        "training.checkpoint_interval": 2, "training.eval_interval": 3,
        "output.checkpoint_dir": str(run_dir)}


def test_train_reports_steps_and_exports(tmp_path):
    steps = []
    result = nanochat.train(os.path.join(REPO, "configs/tiny.toml"),
                            tiny_overrides(tmp_path / "run"), on_step=steps.append)
    assert [s["step"] for s in steps] == list(range(1, 7))
    assert all(s["total_steps"] == 6 and s["loss"] > 0 for s in steps)
    assert result["finished"] and result["steps"] == 6
    m = nanochat.Model(result["model"], n_threads=1)
    assert m.info()["n_vocab"] == 300
    assert isinstance(m("int main(", max_tokens=4, seed=1)["choices"][0]["text"], str)
    out = tmp_path / "again.gguf"
    assert nanochat.export(tmp_path / "run", out) == 6
    assert out.read_bytes() == open(result["model"], "rb").read()


def test_train_callback_stops_and_resume_continues(tmp_path):
    config = os.path.join(REPO, "configs/tiny.toml")
    first = nanochat.train(config, tiny_overrides(tmp_path / "run"),
                           on_step=lambda s: s["step"] < 3)
    assert first["stopped_early"] and first["steps"] == 3 and not first["finished"]
    rest = []
    second = nanochat.train(config, tiny_overrides(tmp_path / "run"), resume=True,
                            on_step=rest.append)
    assert [s["step"] for s in rest] == [4, 5, 6]
    assert second["finished"]
    with pytest.raises(ValueError, match="batch_size"):
        nanochat.train(config, {"training.batch_size": 0})
    with pytest.raises(ZeroDivisionError):
        nanochat.train(config, tiny_overrides(tmp_path / "boom"), on_step=lambda s: 1 / 0)


def test_logits_equal_the_commands_perplexity(model, binary, tmp_path):
    """eval_logits gives what `nanochat perplexity` scores: one chunk of the text's length,
    llama.cpp's rule (the second half of the chunk's predictions)."""
    text = "fn main() {\n    let v: Vec<u32> = (1..10).collect();\n    println!(\"{:?}\", v);\n}\n"
    (tmp_path / "t.rs").write_text(text)
    ids = model.tokenize(text)
    out = subprocess.run([binary, "perplexity", "-f", str(tmp_path / "t.rs"), "-c", str(len(ids)),
                          "--json"], capture_output=True, text=True, check=True).stdout
    cli = json.loads(out)
    z = model.eval_logits(ids).astype(np.float64)
    lse = np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) + z.max(axis=1)
    logp = z[np.arange(len(ids) - 1), ids[1:]] - lse[:-1]
    scored = logp[len(ids) // 2:]
    assert cli["scored_tokens"] == len(scored)
    assert np.exp(-scored.mean()) == pytest.approx(cli["perplexity"], rel=1e-5)


def test_ctrl_c_stops_training_with_a_checkpoint(tmp_path):
    overrides = tiny_overrides(tmp_path / "run", total_steps=400)
    script = (
        "import nanochat, sys, json\n"
        f"config, overrides = {os.path.join(REPO, 'configs/tiny.toml')!r}, {overrides!r}\n"
        "def step(s):\n"
        "    print('step', s['step'], flush=True)\n"
        "try:\n"
        "    nanochat.train(config, overrides, on_step=step)\n"
        "    print('finished', flush=True)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    first = []\n"
        "    nanochat.train(config, overrides, resume=True,\n"
        "                   on_step=lambda s: first.append(s['step']) and False)\n"
        "    print('resumed', first[0], flush=True)\n")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    lines = []
    while True:
        line = p.stdout.readline()
        assert line, p.stderr.read()
        lines.append(line.split())
        if lines[-1] == ["step", "3"]:
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    rest = [l.split() for l in out.splitlines()]
    assert ["interrupted"] in rest, (out, err)
    printed = max(int(l[1]) for l in lines + rest if l[0] == "step")
    resumed = [int(l[1]) for l in rest if l[0] == "resumed"]
    # The step running when Ctrl-C came finished and was checkpointed; nothing after it ran, and
    # the resumed run starts right after it.
    assert resumed and 3 < resumed[0] < 400, (out, err)
    assert printed <= resumed[0] - 1 <= printed + 1, (out, err)
    assert p.returncode == 0


# -- registry names and downloads (a real HTTP server on the loopback address) ------------------

sys.path.insert(0, os.path.join(REPO, "tests", "zoo"))


@pytest.fixture
def served(tmp_path, monkeypatch, binary):
    from model_server import ModelServer
    root = tmp_path / "served"
    root.mkdir()
    default = nanochat.default_model_path()
    subprocess.run([binary, "model", "random", "-o", str(root / "m.gguf"), "--tokenizer", default,
                    "--dim", "512", "--ffn", "512", "--layers", "1", "--heads", "2",
                    "--kv-heads", "1", "--ctx", "64", "--embedding", "f16"],
                   check=True, capture_output=True)
    monkeypatch.setenv("NANOCHAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NANOCHAT_CONFIG", str(tmp_path / "config"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    server = ModelServer(str(root))
    yield server, root
    server.close()


def test_download_and_names(served, tmp_path):
    server, root = served
    import hashlib
    digest = hashlib.sha256((root / "m.gguf").read_bytes()).hexdigest()
    url = f"{server.url}/files/m.gguf"
    progress = []
    path = nanochat.download(url, on_progress=lambda done, total: progress.append((done, total)))
    assert os.path.basename(path) == "sha256-" + digest
    assert progress[-1] == (os.path.getsize(root / "m.gguf"),) * 2
    assert nanochat.download(url) == path  # cached
    assert nanochat.Model(url, n_threads=1).info()["n_vocab"] == model_vocab()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "registry.toml").write_text(
        f'[[model]]\nname = "tiny"\nurl = "{server.url}/files/m.gguf"\nsha256 = "{digest}"\n')
    listed = {m["name"]: m for m in nanochat.models()}
    assert listed["tiny"]["path"] is None and listed["nanochat-rust"]["path"]
    with pytest.raises(ValueError, match="nanochat download tiny"):
        nanochat.Model("tiny")
    m = nanochat.Model("tiny", pull=True, n_threads=1)
    assert m.model_path == path
    with pytest.raises(nanochat.DownloadError, match="SHA-256 mismatch"):
        nanochat.download(url, sha256="0" * 64, force=True)
    with pytest.raises(nanochat.DownloadError, match="404"):
        nanochat.download(f"{server.url}/files/nothing.gguf")
    with pytest.raises(ValueError, match="no model of that name"):
        nanochat.download("no-such-model")


def model_vocab():
    return nanochat.Model(n_threads=1).info()["n_vocab"]


def test_ctrl_c_interrupts_a_download_and_it_resumes(served):
    server, root = served
    url = f"{server.url}/slow/m.gguf"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.time()
    with pytest.raises(KeyboardInterrupt):
        nanochat.download(url)
    assert time.time() - started < 3
    partial = os.path.join(os.environ["NANOCHAT_CACHE"], "models", "partial")
    kept = sum(os.path.getsize(os.path.join(partial, f)) for f in os.listdir(partial)
               if f.endswith(".part"))
    assert 0 < kept < os.path.getsize(root / "m.gguf")
    nanochat.download(url)
    assert server.requests("/slow/")[-1]["range"] == f"bytes={kept}-"


def test_pip_install_into_a_virtual_environment(binary, tmp_path):
    """`pip install ./python --no-build-isolation --no-index` into a venv (reusing this build's
    configured folder, so only the module target is built), then the package from outside the
    repository: version, the default model and the registry it carries."""
    build = os.path.dirname(os.path.dirname(os.path.abspath(binary)))
    assert os.path.isfile(os.path.join(build, "CMakeCache.txt")), build
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, capture_output=True)
    env = dict(os.environ, NANOCHAT_BUILD_DIR=build)
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", os.path.join(REPO, "python"),
                        "--no-build-isolation", "--no-index", "-q"],
                       capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    script = ("import nanochat, json\n"
              "m = nanochat.Model(n_threads=1)\n"
              "out = m('fn main() {', max_tokens=4, seed=1)\n"
              "print(json.dumps({'version': nanochat.__version__, 'file': nanochat.__file__,\n"
              "  'model': m.model_path, 'n': out['usage']['completion_tokens'],\n"
              "  'names': [x['name'] for x in nanochat.models()]}))\n")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True,
                       text=True, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["version"] == nanochat.__version__
    assert got["file"].startswith(str(venv))
    assert got["model"].startswith(str(venv)) and got["model"].endswith("nanochat-rust.gguf")
    assert got["n"] == 4 and "nanochat-rust" in got["names"]
