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
