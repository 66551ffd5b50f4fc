"""nanochat download, models and -m NAME against a real HTTP server on the loopback address
(tests/zoo/model_server.py). Run by ctest as zoo.download:

    /usr/bin/python3 -m pytest tests/zoo --nanochat-binary build/test/src/nanochat

Every nanochat run gets its own cache (NANOCHAT_CACHE) and config folder (NANOCHAT_CONFIG, for a
user registry); HF_TOKEN is unset unless a test sets it; nothing leaves 127.0.0.1.
"""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from model_server import ModelServer


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="session")
def binary(request):
    return os.path.abspath(request.config.getoption("--nanochat-binary"))


@pytest.fixture(scope="session")
def files(binary, tmp_path_factory):
    """Models the server serves: small.gguf (3 MB, runs), big.gguf (10 MB), junk.bin."""
    root = tmp_path_factory.mktemp("served")
    default = subprocess.run([binary, "models", "path", "nanochat-rust"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert os.path.isfile(default), default
    common = ["--tokenizer", default, "--layers", "1", "--heads", "2", "--kv-heads", "1",
              "--ctx", "64"]
    subprocess.run([binary, "model", "random", "-o", str(root / "small.gguf"), "--dim", "256",
                    "--ffn", "256", "--embedding", "q8_0", *common], check=True, capture_output=True)
    subprocess.run([binary, "model", "random", "-o", str(root / "big.gguf"), "--dim", "512",
                    "--ffn", "512", "--embedding", "f16", "--seed", "2", *common], check=True,
                   capture_output=True)
    (root / "junk.bin").write_bytes(random.Random(5).randbytes(300_000))
    return root


@pytest.fixture
def server(files):
    s = ModelServer(str(files))
    yield s
    s.close()


class Env:
    """A cache, a config folder and the environment a nanochat run gets."""

    def __init__(self, binary, tmp_path):
        self.binary = binary
        self.cache = tmp_path / "cache"
        self.config = tmp_path / "config"
        self.config.mkdir()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("NANOCHAT_") and k not in ("HF_TOKEN", "XDG_CONFIG_HOME")}
        self.env["NANOCHAT_CACHE"] = str(self.cache)
        self.env["NANOCHAT_CONFIG"] = str(self.config)

    def registry(self, text):
        (self.config / "registry.toml").write_text(text)

    def run(self, *args, timeout=120, extra_env=None):
        env = dict(self.env, **(extra_env or {}))
        return subprocess.run([self.binary, *args], capture_output=True, text=True, env=env,
                              timeout=timeout)

    def popen(self, *args, extra_env=None):
        env = dict(self.env, **(extra_env or {}))
        return subprocess.Popen([self.binary, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    def blobs(self):
        d = self.cache / "models" / "blobs"
        return sorted(os.listdir(d)) if d.exists() else []

    def partials(self):
        d = self.cache / "models" / "partial"
        return sorted(p for p in os.listdir(d) if p.endswith(".part")) if d.exists() else []

    def partial_size(self):
        d = self.cache / "models" / "partial"
        return sum(os.path.getsize(d / p) for p in self.partials())


@pytest.fixture
def env(binary, tmp_path):
    return Env(binary, tmp_path)


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def fails(result, code, *needles):
    assert result.returncode == code, f"exit {result.returncode} (want {code})\n{result.stderr}"
    for n in needles:
        assert n in result.stderr, f"{n!r} not in: {result.stderr}"
    # (An unformatted placeholder would be a bug; other braces may come from the server's bytes.)
    lines = [l for l in result.stderr.splitlines() if l.startswith("nanochat: ") and "{}" not in l]
    assert lines, result.stderr
    return result


# -- clean downloads -----------------------------------------------------------------------------

def test_clean_download_by_url_is_cached_verified_and_listed(env, server, files):
    url = f"{server.url}/files/small.gguf"
    r = ok(env.run("download", url))
    path = r.stdout.strip()
    assert os.path.isfile(path)
    assert sha256(path) == sha256(files / "small.gguf")
    assert os.path.basename(path) == "sha256-" + sha256(files / "small.gguf")
    assert env.partials() == []
    # Not a terminal: progress as JSON lines on stderr, ending at the whole file.
    events = [json.loads(l) for l in r.stderr.splitlines() if l.startswith("{")]
    assert events and events[-1]["event"] == "progress"
    assert events[-1]["bytes"] == events[-1]["total"] == os.path.getsize(files / "small.gguf")
    # Cached: a second call transfers nothing.
    sent = server.bytes_sent("/files/small.gguf")
    r2 = ok(env.run("download", url))
    assert r2.stdout.strip() == path and "already downloaded" in r2.stderr
    assert server.bytes_sent("/files/small.gguf") == sent
    listing = ok(env.run("models", "list", "--json"))
    entries = {e["name"]: e for e in json.loads(listing.stdout)}
    assert entries[url]["path"] == path and entries[url]["status"] == "downloaded"
    assert entries["nanochat-rust"]["status"] == "local"
    assert ok(env.run("models", "path", url)).stdout.strip() == path
    # -m with the address uses the cached file.
    ok(env.run("generate", "-m", url, "-p", "fn", "-n", "2", "--temp", "0"))


def test_download_to_output_path(env, server, files, tmp_path):
    out = tmp_path / "here.gguf"
    r = ok(env.run("download", f"{server.url}/files/small.gguf", "-o", str(out)))
    assert r.stdout.strip() == str(out) and sha256(out) == sha256(files / "small.gguf")
    assert not (tmp_path / "here.gguf.part").exists()
    assert env.blobs() == []


def test_redirect_chain_is_followed(env, server, files):
    r = ok(env.run("download", f"{server.url}/redirect/3/small.gguf"))
    assert sha256(r.stdout.strip()) == sha256(files / "small.gguf")
    assert len(server.requests("/redirect/")) == 3


def test_unknown_size_chunked_transfer(env, server, files):
    r = ok(env.run("download", f"{server.url}/chunked/small.gguf"))
    assert sha256(r.stdout.strip()) == sha256(files / "small.gguf")


# -- registry names and -m NAME ------------------------------------------------------------------

def registry_entry(server, files, name="tiny", route="files", sha=None, size=None, extra=""):
    sha = sha or sha256(files / "small.gguf")
    size = size or os.path.getsize(files / "small.gguf")
    return (f'[[model]]\nname = "{name}"\ndescription = "a test model"\n'
            f'url = "{server.url}/{route}/small.gguf"\nsha256 = "{sha}"\nsize = {size}\n{extra}')


def test_registry_name_download_and_m_name(env, server, files):
    env.registry(registry_entry(server, files))
    r = fails(env.run("generate", "-m", "tiny", "-p", "fn", "-n", "2"), 2,
              "nanochat download tiny", "--pull")
    assert server.requests("/files/") == [] and env.blobs() == []
    ok(env.run("--pull", "generate", "-m", "tiny", "-p", "fn", "-n", "2", "--temp", "0"))
    assert len(env.blobs()) == 1
    sent = server.bytes_sent("/files/")
    ok(env.run("generate", "-m", "tiny", "-p", "fn", "-n", "2", "--temp", "0"))
    assert server.bytes_sent("/files/") == sent  # cached: no transfer
    show = json.loads(ok(env.run("models", "show", "tiny", "--json")).stdout)
    assert show["status"] == "downloaded" and show["sha256"] == sha256(files / "small.gguf")
    assert show["description"] == "a test model"


def test_registry_pull_true_downloads_without_flag(env, server, files):
    env.registry(registry_entry(server, files, extra="pull = true\n"))
    ok(env.run("tokenize", "-m", "tiny", "-p", "fn main() {}"))
    assert len(env.blobs()) == 1


def test_registry_second_url_used_when_first_fails(env, server, files):
    sha = sha256(files / "small.gguf")
    env.registry(f'[[model]]\nname = "two"\nurl = ["{server.url}/files/missing.gguf", '
                 f'"{server.url}/files/small.gguf"]\nsha256 = "{sha}"\n')
    r = ok(env.run("download", "two"))
    assert sha256(r.stdout.strip()) == sha and "trying the next address" in r.stderr


def test_models_rm_keeps_a_blob_another_name_uses(env, server, files):
    sha = sha256(files / "small.gguf")
    env.registry(registry_entry(server, files, name="a") + "\n" + registry_entry(server, files, name="b"))
    ok(env.run("download", "a"))
    ok(env.run("download", "b"))
    assert env.blobs() == ["sha256-" + sha]
    r = ok(env.run("models", "rm", "a"))
    assert "another name refers to it" in r.stderr and env.blobs() == ["sha256-" + sha]
    r = ok(env.run("models", "rm", "b"))
    assert "freed" in r.stderr and env.blobs() == []
    fails(env.run("models", "rm", "b"), 1, "not in the cache")
    fails(env.run("models", "path", "b"), 1, "nanochat download b")
    fails(env.run("models", "rm", "nanochat-rust"), 2, "ships")


def test_bad_user_registry_names_file_and_field(env):
    env.registry('[[model]]\nname = "x"\nurl = "ftp://example/x.gguf"\n')
    fails(env.run("download", "x"), 1, "registry.toml", "ftp://")
    env.registry('# mine\n\n[[model]]\nname = "x"\nurl = "http://127.0.0.1:1/x"\nsha256 = "abc"\n')
    fails(env.run("models", "list"), 1, "registry.toml:3: model 'x'", "sha256")
    env.registry('[[model]]\nname = "x"\nurl = "http://127.0.0.1:1/x"\ncolour = 1\n')
    fails(env.run("models", "list"), 1, "unknown field 'colour'")
    env.registry('[[model]\n')
    fails(env.run("models", "list"), 1, "registry.toml:1")


def test_unknown_name_and_bad_arguments(env):
    fails(env.run("download", "no-such-model"), 2, "no model of that name")
    fails(env.run("generate", "-m", "no-such-model", "-p", "x"), 2, "no model of that name")
    # The closest names are suggested.
    fails(env.run("download", "nanochat-rsut"), 2, "did you mean nanochat-rust?")
    fails(env.run("generate", "-m", "bitnet", "-p", "x"), 2, "did you mean bitnet-b1.58-2b-4t?")
    fails(env.run("models", "show", "nanochat_rust"), 2, "did you mean nanochat-rust?")
    fails(env.run("download", "http://"), 2, "not a valid URL")
    fails(env.run("download", "http://exa mple.org/x.gguf"), 2, "not a valid URL")
    fails(env.run("download", "hf://only-owner"), 2, "hf://OWNER/REPO/FILE")
    fails(env.run("download", "hf://owner/repo/"), 2, "hf://OWNER/REPO/FILE")
    fails(env.run("download", "http://127.0.0.1:1/x.gguf", "--sha256", "xyz"), 2, "--sha256")
    fails(env.run("download"), 2, "model")


# -- failures and recovery -----------------------------------------------------------------------

def test_wrong_sha256_keeps_nothing(env, server, files):
    wrong = "0" * 64
    r = fails(env.run("download", f"{server.url}/files/small.gguf", "--sha256", wrong), 1,
              "SHA-256 mismatch", wrong, sha256(files / "small.gguf"))
    assert env.blobs() == [] and env.partials() == []


def test_not_a_gguf_keeps_nothing(env, server):
    fails(env.run("download", f"{server.url}/files/junk.bin"), 1, "not a GGUF model", "starting")
    assert env.blobs() == [] and env.partials() == []


def test_http_errors(env, server, files):
    fails(env.run("download", f"{server.url}/files/nothing.gguf"), 1, "404")
    fails(env.run("download", f"{server.url}/auth/small.gguf"), 1, "401")
    assert env.blobs() == [] and env.partials() == []


def test_500_then_success_on_retry(env, server, files):
    r = ok(env.run("download", f"{server.url}/flaky/small.gguf"))
    assert sha256(r.stdout.strip()) == sha256(files / "small.gguf")
    assert "HTTP 500" in r.stderr and "retrying" in r.stderr
    assert [e["status"] for e in server.requests("/flaky/")] == [500, 200]


def test_retries_run_out(env, server):
    fails(env.run("download", "http://127.0.0.1:1/x.gguf", "--retries", "1"), 1,
          "2 attempts in a row failed")
    assert env.partials() == []  # nothing arrived: nothing kept


def test_dropped_connection_resumes_with_a_range_request(env, server, files):
    r = ok(env.run("download", f"{server.url}/drop/big.gguf"))
    assert sha256(r.stdout.strip()) == sha256(files / "big.gguf")
    reqs = server.requests("/drop/")
    size = os.path.getsize(files / "big.gguf")
    assert len(reqs) == 2 and reqs[0]["range"] is None
    assert reqs[1]["range"] == f"bytes={size // 2}-" and reqs[1]["if_range"]
    assert reqs[1]["status"] == 206 and server.bytes_sent("/drop/") == size
    assert "resuming" in r.stderr


def start_and_kill_midway(env, url, min_bytes=1_000_000):
    p = env.popen("download", url)
    deadline = time.time() + 30
    while env.partial_size() < min_bytes and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    assert p.poll() is None, "the download finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    return env.partial_size()


def test_killed_client_resumes_transferring_only_the_rest(env, server, files):
    url = f"{server.url}/slow/big.gguf"
    size = os.path.getsize(files / "big.gguf")
    have = start_and_kill_midway(env, url)
    assert 0 < have < size and env.blobs() == []
    r = ok(env.run("download", url))
    assert sha256(r.stdout.strip()) == sha256(files / "big.gguf")
    last = server.requests("/slow/")[-1]
    assert last["range"] == f"bytes={have}-" and last["status"] == 206
    assert last["sent"] == size - have
    assert env.partials() == []


def test_file_changed_on_server_restarts_cleanly(env, server, files, tmp_path):
    url = f"{server.url}/slow/swap.gguf"
    shutil.copy(files / "big.gguf", files / "swap.gguf")
    try:
        start_and_kill_midway(env, url)
        time.sleep(0.01)
        shutil.copy(files / "small.gguf", tmp_path / "new.gguf")
        os.replace(tmp_path / "new.gguf", files / "swap.gguf")  # new inode and mtime: new ETag
        r = ok(env.run("download", url))
        assert sha256(r.stdout.strip()) == sha256(files / "small.gguf")
        last = server.requests("/slow/swap")[-1]
        assert last["range"] is not None and last["status"] == 200  # If-Range failed: whole file
        assert "starting over" in r.stderr
    finally:
        os.remove(files / "swap.gguf")


def test_server_lying_about_size(env, server, files):
    fails(env.run("download", f"{server.url}/lie-long/small.gguf"), 1, "announced")
    assert env.blobs() == [] and env.partials() == []
    fails(env.run("download", f"{server.url}/lie-short/small.gguf"), 1, "not a valid GGUF")
    assert env.blobs() == [] and env.partials() == []
    # A registry size the server contradicts.
    env.registry(registry_entry(server, files, size=12345))
    fails(env.run("download", "tiny"), 1, "registry says 12345")
    assert env.blobs() == [] and env.partials() == []


def test_ctrl_c_keeps_the_partial_file_for_a_resume(env, server, files):
    url = f"{server.url}/slow/big.gguf"
    p = env.popen("download", url)
    deadline = time.time() + 30
    while env.partial_size() < 500_000 and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "interrupted" in err and "resume" in err
    assert env.partial_size() > 0
    r = ok(env.run("download", url))
    assert sha256(r.stdout.strip()) == sha256(files / "big.gguf")


def test_two_concurrent_downloads_share_one_transfer(env, server, files):
    url = f"{server.url}/slow/big.gguf"
    a = env.popen("download", url)
    time.sleep(0.2)
    b = env.popen("download", url)
    out_a, err_a = a.communicate(timeout=120)
    out_b, err_b = b.communicate(timeout=120)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    assert out_a.strip() == out_b.strip() and sha256(out_a.strip()) == sha256(files / "big.gguf")
    assert "waiting" in err_a + err_b
    assert server.bytes_sent("/slow/") == os.path.getsize(files / "big.gguf")


def test_full_disk(env, server, files, tmp_path):
    """A 1 MiB tmpfs as the cache (in a private mount namespace): with the size known the
    download stops before writing; with it unknown (chunked) at the write that fails."""
    small_fs = tmp_path / "small-fs"
    small_fs.mkdir()
    for route, needle in (("files", "free on that disk"), ("chunked", "No space left")):
        script = (f'mount -t tmpfs -o size=1m tmpfs "{small_fs}" && '
                  f'NANOCHAT_CACHE="{small_fs}" "{env.binary}" download {server.url}/{route}/big.gguf; '
                  f'echo "exit=$?"; ls -a "{small_fs}/models/blobs" 2>/dev/null | grep sha256 || true')
        r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                           env=env.env, timeout=120)
        assert "exit=1" in r.stdout, r.stdout + r.stderr
        assert "not enough disk space" in r.stderr and needle in r.stderr, r.stderr
        assert "sha256-" not in r.stdout  # nothing unverified became visible


# -- Hugging Face addresses ----------------------------------------------------------------------

def test_hf_address_with_linked_etag(env, server, files):
    extra = {"NANOCHAT_HF_ENDPOINT": f"{server.url}/hf"}
    r = ok(env.run("download", "hf://owner/repo/small.gguf", extra_env=extra))
    assert sha256(r.stdout.strip()) == sha256(files / "small.gguf")
    req = server.requests("/hf/")[0]
    assert req["path"] == "/hf/owner/repo/resolve/main/small.gguf" and req["auth"] is None
    ok(env.run("download", "hf://owner/repo/small.gguf", "--revision", "v2", extra_env=extra))
    assert server.requests("/hf/")[-1]["path"] == "/hf/owner/repo/resolve/v2/small.gguf"
    names = {e["name"] for e in json.loads(ok(env.run("models", "list", "--json")).stdout)}
    assert {"hf://owner/repo/small.gguf", "hf://owner/repo/small.gguf@v2"} <= names
    # -m with the address finds the cached file; uncached it says how to fetch it.
    ok(env.run("tokenize", "-m", "hf://owner/repo/small.gguf", "-p", "x", extra_env=extra))
    fails(env.run("tokenize", "-m", "hf://owner/repo/big.gguf", "-p", "x", extra_env=extra), 2,
          "nanochat download hf://owner/repo/big.gguf")


def test_hf_linked_etag_mismatch_is_rejected(env, server, files):
    server.linked_etag_override = "1" * 64
    fails(env.run("download", "hf://owner/repo/small.gguf",
                  extra_env={"NANOCHAT_HF_ENDPOINT": f"{server.url}/hf"}), 1,
          "SHA-256 mismatch", "1" * 64, "X-Linked-Etag")
    assert env.blobs() == [] and env.partials() == []


def test_hf_token_goes_to_the_hub_only(env, server, files):
    """A private repository: 401 without HF_TOKEN, 403 with a wrong one, the file with the right
    one; the redirect to another host (the CDN, here 127.0.0.2) gets no token."""
    cdn = ModelServer(str(files), host="127.0.0.2")
    server.cdn = cdn
    try:
        env.registry('[[model]]\nname = "private"\nurl = "hf://private/repo/small.gguf"\n')
        extra = {"NANOCHAT_HF_ENDPOINT": f"{server.url}/hf"}
        fails(env.run("download", "private", extra_env=extra), 1, "401", "set HF_TOKEN")
        fails(env.run("download", "private", extra_env=dict(extra, HF_TOKEN="wrong")), 1, "403",
              "HF_TOKEN was refused")
        r = ok(env.run("download", "private", extra_env=dict(extra, HF_TOKEN="secret-token")))
        assert sha256(r.stdout.strip()) == sha256(files / "small.gguf")
        assert server.requests("/hf/")[-1]["auth"] == "Bearer secret-token"
        assert cdn.requests("/files/")[-1]["auth"] is None
        # A plain URL never gets the token.
        fails(env.run("download", f"{server.url}/auth/small.gguf",
                      extra_env={"HF_TOKEN": "secret-token"}), 1, "401", "only to hf://")
    finally:
        server.cdn = None
        cdn.close()


# -- what a user runs into --------------------------------------------------------------------

def test_output_path_checks(env, server, files, tmp_path):
    url = f"{server.url}/files/small.gguf"
    out_dir = tmp_path / "dir"
    out_dir.mkdir()
    r = ok(env.run("download", url, "-o", str(out_dir)))
    assert r.stdout.strip() == str(out_dir / "small.gguf")
    assert sorted(os.listdir(out_dir)) == ["small.gguf"]  # no lock or partial left beside it
    sent = server.bytes_sent("/files/")
    fails(env.run("download", url, "-o", str(out_dir / "small.gguf")), 2, "exists", "--force")
    fails(env.run("download", url, "-o", str(tmp_path / "missing" / "x.gguf")), 2, "does not exist")
    assert server.bytes_sent("/files/") == sent  # refused before any transfer
    ok(env.run("download", url, "-o", str(out_dir / "small.gguf"), "--force"))


def test_arguments_that_cannot_apply(env, server, files):
    url = f"{server.url}/files/small.gguf"
    fails(env.run("download", url, "--revision", "v2"), 2, "only hf:// addresses have revisions")
    fails(env.run("download", "ftp://127.0.0.1/x.gguf"), 2, "only https://, http:// and hf://")
    fails(env.run("download", str(files / "small.gguf")), 2, "is a file here already")
    env.registry(registry_entry(server, files))
    fails(env.run("download", "tiny", "--sha256", "1" * 64), 2, "the registry", "says tiny")
    assert server.requests("/files/") == []


def test_several_models_and_a_known_blob_is_not_fetched_again(env, server, files):
    sha = sha256(files / "small.gguf")
    env.registry(registry_entry(server, files, name="a") + "\n" +
                 registry_entry(server, files, name="b", route="redirect/1"))
    r = ok(env.run("download", "a", "b"))
    assert r.stdout.split() == [str(env.cache / "models" / "blobs" / ("sha256-" + sha))] * 2
    assert server.requests("/redirect/") == []  # b has a's SHA-256: the blob is reused


def test_refused_address_falls_through_quickly(env, server, files):
    sha = sha256(files / "small.gguf")
    env.registry(f'[[model]]\nname = "m"\nurl = ["http://127.0.0.1:1/m.gguf", '
                 f'"{server.url}/files/small.gguf"]\nsha256 = "{sha}"\n')
    started = time.time()
    ok(env.run("download", "m"))
    assert time.time() - started < 6


def test_partial_downloads_are_listed_and_removable(env, server, files):
    url = f"{server.url}/slow/big.gguf"
    have = start_and_kill_midway(env, url)
    listed = {e["name"]: e for e in json.loads(ok(env.run("models", "list", "--json")).stdout)}
    assert listed[url]["status"] == "partial" and listed[url]["bytes"] == have
    assert "partial" in ok(env.run("models")).stdout
    r = ok(env.run("models", "rm", url))
    assert "unfinished download" in r.stderr and env.partials() == []


def test_serve_names_the_model_as_given(env, server, files):
    import urllib.request
    env.registry(registry_entry(server, files))
    ok(env.run("download", "tiny"))
    p = env.popen("serve", "-m", "tiny", "--port", "0", "-t", "1")
    try:
        port = None
        for _ in range(50):  # notes (the autotuner's) may come before the address
            line = p.stderr.readline()
            assert line, "serve exited before listening"
            if "http://127.0.0.1:" in line:
                port = int(line.split("http://127.0.0.1:")[1].split()[0].strip("/"))
                break
        assert port, "serve never said where it listens"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as resp:
                    models = json.load(resp)
                break
            except OSError:
                assert time.time() < deadline, "serve never answered"
                time.sleep(0.2)
        assert [m["id"] for m in models["data"]] == ["tiny"]
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
